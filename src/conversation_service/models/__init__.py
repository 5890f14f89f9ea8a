"""Pydantic API schemas (request and response bodies)."""
