"""Developer and operator tooling, which no service imports.

``stopsms`` (the CLI), ``stopsms up``'s local launcher and stand-in parties, the ledger check,
list scrubbing, health probes, manifests and protogen. A service runs the same without it.
"""
