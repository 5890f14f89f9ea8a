"""Load test: simulated users and an orchestrator against a real service, with a final audit."""
