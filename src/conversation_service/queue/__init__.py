"""Background work: the transactional outbox, RQ dispatch, the job runner and the tasks."""
