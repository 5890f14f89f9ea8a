"""Domain services: take a connection and arguments, raise domain errors, never commit."""
