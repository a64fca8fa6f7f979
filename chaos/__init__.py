"""Fault tests: load, a fault in the middle, recovery, then the ledger check (``make chaos``)."""
