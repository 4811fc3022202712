"""`ringrift-train dashboard`: a live, read-only web page over the cluster's Redis state.

`data` gathers the panels (configs, running jobs and curves, Elo, GPU timeline, trouble),
`stream_tail` keeps the bounded memory of the event stream the curves come from, `server` serves
the page (Starlette on uvicorn) with its vendored chart library in `static/` (uPlot, MIT).
"""

DEFAULT_HOST = "127.0.0.1"  # the page binds loopback unless told otherwise (then it needs --token)
DEFAULT_PORT = 8080
