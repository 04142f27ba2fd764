"""Orchestra supervisor: the control plane that owns engine processes, GPUs and the page cache.

Installed as `orchestra.supervisor` (vLLM's dependencies bring PyPI's `supervisor`).

Who owns what (one owner each):
- `engine.Engine`: one asyncio task per engine process owns its state machine; others send it
  commands and await the reply. `states` names the states; `procgroup` spawns and kills
  process groups, with `reaper` as the backstop when the supervisor itself dies.
- `manager.Manager`: the model table and the command entry points (ensure, load, unload, sleep,
  wake, restart); joins concurrent ensures of one model into one swap.
- `placement.Placer`: the only code that places engines (`allocator` plans, pure) and evicts
  them, under one lock; the only writer of `Model.hot` and `Model.draining`. Eviction drains:
  the victim leaves the gateways' rotation and is stopped once they report nothing in flight
  on it (`gateways.GatewayReports`, fed by each gateway's sync).
- `demand` keeps request counts and last use; `rotation` decides demand swaps (pure);
  `preloader` (with `pagecache`) preloads cold models' weights and measures residency;
  `api` exposes it all over HTTP. Clients use `orchestra.control.ControlClient`.
"""
