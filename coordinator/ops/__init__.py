"""Layer 5, operator tools: the `ringrift-train` CLI and its views (status, priorities, events,
submit --wait), the dashboard, the demo, a private redis-server and a pool of `rq worker` processes.
"""
