"""The HAProxy router backend: zerodown writes `haproxy.cfg`, runs HAProxy master-worker, and
drives it through the Runtime API.

config.py       haproxy.cfg from the routes and targets (frontends, ACLs, backends, checks)
state.py        the files under `<state_dir>/haproxy/` and the routes/targets state file
runtime_api.py  the Runtime API and master CLI client; HAProxy's errors become RouterError
process.py      start (detached), hitless reload, graceful stop, `show proc`
stats.py        `show stat` / `show servers conn` parsing and the 10 s metrics sampler
router.py       `HaproxyRouter`: the `Router` seam and `TrafficMetrics`
backend.py      `HaproxyBackend` (the `RouterBackend`) and `backend(settings)` for the registry
"""
