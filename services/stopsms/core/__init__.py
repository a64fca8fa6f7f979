"""Code shared by every service: numbers, pseudonyms, settings, parties, Kafka and Redis."""
