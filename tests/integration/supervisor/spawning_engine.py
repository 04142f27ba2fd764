"""An engine that forks a worker (like vLLM's engine-core processes) and then becomes the fake
engine. The worker stays in the engine's process group and ignores SIGTERM, so only a group
SIGKILL gets rid of it: the orphan tests count it.

    python spawning_engine.py FAKE_ENGINE_ARGS...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WORKER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

if __name__ == "__main__":
    subprocess.Popen([sys.executable, "-c", WORKER])  # same process group, parent = engine
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fake = Path(__file__).resolve().parents[2] / "fake_engine.py"
    os.execv(sys.executable, [sys.executable, str(fake), *sys.argv[1:]])
