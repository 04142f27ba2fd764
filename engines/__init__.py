"""Engines Orchestra ships itself, for the APIs vLLM does not serve on a CPU.

Each engine is a subprocess the supervisor launches like `vllm serve`: the model, then
`--served-model-name`, `--host`, `--port`; `/health` answers 200 once it is ready.
"""
