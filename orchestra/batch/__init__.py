"""`orchestra batch`: datasets through gateways. `cli` (the subcommands), `run` (one dataset
through one gateway: concurrency, retries, progress, `--resume`), `data` (rows in and out:
JSONL, CSV, Parquet), `ray_data` (datasets beyond one machine on Ray Data; optional, the core
never imports Ray)."""
