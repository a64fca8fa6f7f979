"""Intake: accepts citizens' requests from every channel and issues StopSMS links."""
