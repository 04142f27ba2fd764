"""Orchestra supervisor: the control plane that owns engine processes, GPUs and the page cache.

Who owns what (one owner each):
- `engine.Engine`: one asyncio task per engine process owns its state machine; others send it
  commands and await the reply. `states` names the states; `procgroup` spawns and kills
  process groups, with `reaper` as the backstop when the supervisor itself dies.
- `manager.Manager`: the model table; the only caller that places engines on GPUs
  (`allocator` plans, pure) and the only one that evicts; joins concurrent ensures of one model.
- `rotation` decides demand swaps (pure) from `demand` windows; `pagecache` preloads and
  measures weight-file residency; `api` exposes it all over HTTP; `ctl` is the CLI client.
"""
