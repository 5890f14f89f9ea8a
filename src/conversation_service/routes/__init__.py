"""HTTP layer: thin routes that parse, call one service and return."""
