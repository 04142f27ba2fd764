"""Orchestra supervisor: the control plane that owns engine processes, GPUs and the page cache.

Installed as `orchestra.supervisor` (vLLM's dependencies bring PyPI's `supervisor`).

Who owns what (one owner each):
- `engine.Engine`: one asyncio task per engine process owns its state machine
  (`transitions.EngineMachine`); others send it commands and await the reply. `states` names
  the states; `procgroup` spawns and kills process groups. When the supervisor itself dies,
  `supervisor.on_supervisor_exit` decides: `adopt` (the default) leaves the engines serving for
  the next supervisor to adopt (`adoption`) or kill; `kill` starts a `reaper` process that
  stops them.
- `manager.Manager`: the model table and the command entry points (ensure, load, unload, sleep,
  wake, restart, a gateway's sync); `swaps.Swaps` joins concurrent ensures of one model into one
  swap; `closing.Closing` makes waiting commands answer 503 once shutdown begins.
- `placement.Placer`: the only code that places engines (`allocator` plans, pure) and evicts
  them, under one lock; the only writer of `Model.hot` and `Model.draining`. Eviction drains:
  the victim leaves the gateways' rotation and is stopped once they report nothing in flight
  on it (`gateways.GatewayReports`, fed by each gateway's sync).
- `demand` keeps request counts and last use; `rotation` decides demand swaps (pure);
  `preloader` (with `pagecache`) preloads cold models' weights and measures residency;
  `launch` (with `lora`) turns the config into engine argv; `adapters` loads LoRA adapters at
  run time; `api` exposes it all over HTTP with the wire types of `orchestra.protocol`.
  Clients (the gateway, `orchestra status|logs|top|up`) use `orchestra.control.ControlClient`.
"""
