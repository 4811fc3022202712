"""Layer 4, the service `ringrift-train run` runs: the orchestrator (events -> jobs), recovery of
deferred, retrying and abandoned jobs, periodic work on rq-scheduler, Prometheus metrics.
"""
