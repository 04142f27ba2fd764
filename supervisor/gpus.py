"""Which GPUs this host has: nvidia-smi when present, else the config (none = a CPU host)."""

from __future__ import annotations

import logging
import shutil
import subprocess

from orchestra.config import SupervisorConfig

log = logging.getLogger(__name__)


def query_nvidia_smi(timeout_s: float) -> list[int] | None:
    """GPU indices from nvidia-smi, or None when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s); using the configured GPUs", exc)
        return None
    return sorted(int(line) for line in out.split() if line.strip().isdigit())


def resolve_gpus(config: SupervisorConfig, detected: list[int] | None) -> list[int]:
    """Detected GPUs win; a configured list then restricts them to a subset."""
    if detected is None:
        return sorted(config.gpus or [])
    if config.gpus is None:
        return detected
    missing = sorted(set(config.gpus) - set(detected))
    if missing:
        log.warning("configured GPUs %s are not on this host (found %s)", missing, detected)
    return sorted(set(config.gpus) & set(detected))


def detect_gpus(config: SupervisorConfig) -> list[int]:
    gpus = resolve_gpus(config, query_nvidia_smi(config.gpu_detect_timeout_s))
    log.info("GPUs under management: %s", gpus or "none (CPU engines)")
    return gpus
