"""Alembic migrations for Switchboard's database (async environment)."""
