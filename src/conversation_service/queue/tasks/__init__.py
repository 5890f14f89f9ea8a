"""RQ task entry points: thin sync shells around async cores (``services/processing.py``)."""
