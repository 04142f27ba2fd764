#!/usr/bin/env bash
# Start only the hot set (`servers:` of the config) through the supervisor.
#
#   scripts/start_hot_models.sh [CONFIG]      # default: configs/vllm_config.yaml
#
# If a supervisor already answers on the config's control API, each hot model is loaded through
# it (`orchestra load`, which waits until READY and prints the table). Otherwise a supervisor is
# started in the foreground with the hot set and no gateway (`orchestra up --hot-only`); Ctrl-C
# stops it and every engine it started.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CONFIG="${1:-configs/vllm_config.yaml}"
ORCHESTRA="${ORCHESTRA:-$REPO_ROOT/.venv/bin/orchestra}"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"

read -r SUPERVISOR_URL HOT_MODELS < <("$PYTHON" - "$CONFIG" <<'PY'
import sys
from orchestra.config import load_config
config = load_config(sys.argv[1])
print(config.supervisor_url, " ".join(s.name for s in config.servers if s.managed))
PY
)

if curl -fsS --max-time 2 "$SUPERVISOR_URL/health" >/dev/null 2>&1; then
    echo "supervisor at $SUPERVISOR_URL: loading the hot set: ${HOT_MODELS:-(none)}"
    status=0
    for model in $HOT_MODELS; do
        "$ORCHESTRA" load "$model" --config "$CONFIG" || status=1
    done
    exit "$status"
fi
exec "$ORCHESTRA" up --hot-only --config "$CONFIG"
