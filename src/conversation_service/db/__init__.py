"""Persistence: ORM tables, engine factory and Alembic migrations (SQLite and PostgreSQL)."""
