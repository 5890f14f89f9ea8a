"""Helpers with no domain logic: token arithmetic, cursors. Imports nothing from services or db."""
