"""Helpers the tests share: plain functions and constants, no fixtures (those are in tests/conftest.py).
No test module imports from another test module; what two of them need lives here.

- polling.py      wait_for (poll with a deadline), or_none (a probe that reads an error as "not yet")
- tools.py        console_script, require, unavailable (a missing tool: a failure in CI, a skip elsewhere)
- processes.py    alive, kill_tree
- streams.py      stream_events, dead_letters, dead_reasons, raw_xrange (the event and dead-letter streams)
- exports.py      export_fields, xadd_export, cli_export, xadd_like_an_exporter (an NPZ_EXPORT_COMPLETE sent)
- jobs.py         take_job, end_job (a job moved the way a worker moves it), trained (every export trained)
- trainers.py     STUB_TRAINER, SIGNAL_TRAINER, stub_trainer(), write_npz (a valid synthetic NPZ)
- acl.py          ROLE_PASSWORDS, ADMIN, render_acl, with_admin, url, as_role (deploy/redis/users.acl)
- grafana.py      DASHBOARD, EXPECTED, panel_queries (what each Grafana panel query must return)
- import_graph.py ROOT, module_files, imports, graph (who imports whom in coordinator/ and workers/)
- signal_trainer.py  a trainer that records the signals it gets (run as `python -m tests.support.signal_trainer`)
- gated_train.py  a trainer wrapper that pauses after an epoch while a hold file says so (hold, release)
- speed_trainer.py  a stub trainer whose epochs take as long as its GPU class makes them (holds like gated_train)
- blocking.py     pause, resume, blocked_clients: which `rq worker` is first in a queue's line, set by the test
- races.py        GATED_STUB, GATED_REFERENCE, wait_until_handled, starve (waits on state, never on time)
- preemption.py   the preemption scenario the stub-trainer and reference-trainer tests share
- chromium_cdp.py  headless Chromium over the DevTools pipe, recording what the page draws on its canvases
- lease_contender.py  a process that takes and gives back one config's lease in a loop (the exclusion test)
"""
