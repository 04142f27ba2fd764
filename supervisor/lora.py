"""LoRA launch flags: what a server with `adapters:` (or `max_loras:`) adds to its engine's
argv. Loading and unloading adapters at run time is `adapters.py`."""

from __future__ import annotations

from orchestra.config import ServerConfig


def lora_enabled(server: ServerConfig) -> bool:
    return bool(server.adapters) or server.max_loras is not None


def lora_args(server: ServerConfig) -> list[str]:
    if not lora_enabled(server):
        return []
    argv = ["--enable-lora", "--max-loras", str(server.max_loras or max(1, len(server.adapters)))]
    if server.max_lora_rank is not None:
        argv += ["--max-lora-rank", str(server.max_lora_rank)]
    if server.adapters:
        argv += ["--lora-modules", *(f"{a.name}={a.path}" for a in server.adapters)]
    return argv
