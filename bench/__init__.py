"""Benchmark harness for the Conversation Service.

Runs the service as a real uvicorn process and measures its hot paths (message append, history
page) against raw-driver baselines (asyncpg, aiosqlite) taken in the same run on the same
database, then reports the ratios against the targets of the performance issue.
"""
