"""Notifier: fans changes out to PSVAs, turns confirmations into receipts, proves propagation."""
