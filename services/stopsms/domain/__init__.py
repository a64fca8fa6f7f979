"""The domain: what an opt-out is, with no I/O at all.

Numbers and their pseudonyms, ids, topics and keys, the parties directory, the registry's rules,
the reply keywords, the PSVA cursor, the view's byte layout and the proof's fold. Everything here
is plain computation over plain data, so it is tested as tables and properties, and every layer
above may use it. ``make lint`` (import-linter) keeps it free of Kafka, Redis, gRPC and HTTP.
"""
