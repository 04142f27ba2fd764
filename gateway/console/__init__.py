"""The web console at `/console`: model table, swaps in progress, live rates, actions and a
playground, served by the gateway (server-rendered HTML, a little JavaScript, updates over SSE).

- `routes.py`: the endpoints (their paths and the admin policy are in `edge/routes.py`).
- `feed.py`: what a page shows, gathered once per tick; the SSE stream.
- `stats.py`: per-model rates from the gateway's own counters.
- `render.py`: the HTML; `static/`: the page template, script and style sheet.
The supervisor is reached through the gateway's control client (`orchestra.control`).
"""
