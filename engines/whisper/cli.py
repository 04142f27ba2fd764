"""The command line: what the supervisor passes (as to `vllm serve`) plus the engine's own flags.

    python -m orchestra.engines.whisper [MODEL] [--model DIR] --served-model-name NAME
        --port P [--host H] [--device cpu] [--compute-type int8] [--threads N] ...
    python -m orchestra.engines.whisper --print-model-path

Of vLLM's flags the supervisor always passes, `--tensor-parallel-size` must be 1 and `--dtype`
picks the compute type (auto = `--compute-type`); `--api-key` guards /v1/* as in vLLM. Any
other flag (`--max-model-len`, `--enable-sleep-mode`, LoRA, ...) is refused, never ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .bundled import ModelFolderError, bundled_model_path, check_model_folder
from .server import serve
from .settings import Settings

# vLLM's --dtype values and the CTranslate2 compute type each means.
DTYPES = {
    "half": "float16",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float": "float32",
    "float32": "float32",
}
DEFAULT_COMPUTE_TYPE = "int8"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestra.engines.whisper", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help="model folder (as --model)")
    p.add_argument("--model", help="a CTranslate2 Whisper model folder")
    p.add_argument("--served-model-name", help="the `model` clients send; default: folder name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--compute-type", help="CTranslate2 compute type; default int8 (or --dtype)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per transcription")
    p.add_argument("--max-concurrent", type=int, default=1, help="transcriptions at once")
    p.add_argument("--max-waiting", type=int, default=16, help="queued requests before 503")
    p.add_argument("--queue-timeout-s", type=float, default=60.0, help="wait for a slot")
    p.add_argument("--request-timeout-s", type=float, default=300.0, help="one transcription")
    p.add_argument("--max-upload-mb", type=float, default=25.0)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--api-key", help="/v1/* need `Authorization: Bearer KEY`")
    p.add_argument("--timeout-keep-alive-s", type=int, default=5)
    p.add_argument("--shutdown-timeout-s", type=int, default=10)
    p.add_argument("--log-level", default="info")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="must be 1")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    p.add_argument(
        "--print-model-path", action="store_true", help="print the bundled model folder, exit"
    )
    return p


def settings_from(args: argparse.Namespace, p: argparse.ArgumentParser) -> Settings:
    """The settings the arguments name; p.error (exit 2) for a contradiction or a bad value."""
    if args.model and args.model_pos and args.model != args.model_pos:
        p.error(f"two models given: {args.model_pos} and --model {args.model}")
    model = args.model or args.model_pos
    if not model:
        p.error("give the model folder (--model DIR); --print-model-path prints the bundled one")
    if args.tensor_parallel_size != 1:
        p.error("--tensor-parallel-size must be 1: the whisper engine runs on one device")
    compute_type = args.compute_type or DTYPES.get(args.dtype, DEFAULT_COMPUTE_TYPE)
    if args.dtype != "auto" and compute_type != DTYPES[args.dtype]:
        p.error(f"--dtype {args.dtype} contradicts --compute-type {compute_type}")
    if args.threads < 0 or args.max_waiting < 0:
        p.error("--threads and --max-waiting must be 0 or more")
    positive = {
        "--max-concurrent": args.max_concurrent,
        "--queue-timeout-s": args.queue_timeout_s,
        "--request-timeout-s": args.request_timeout_s,
        "--max-upload-mb": args.max_upload_mb,
        "--beam-size": args.beam_size,
        "--timeout-keep-alive-s": args.timeout_keep_alive_s,
        "--shutdown-timeout-s": args.shutdown_timeout_s,
    }
    for flag, value in positive.items():
        if value <= 0:
            p.error(f"{flag} is out of range")
    path = Path(model).expanduser().resolve()
    try:
        check_model_folder(path)
    except ModelFolderError as e:
        p.error(str(e))
    return Settings(
        model_dir=path,
        served_name=args.served_model_name or path.name,
        host=args.host,
        port=args.port,
        device=args.device,
        compute_type=compute_type,
        threads=args.threads,
        max_concurrent=args.max_concurrent,
        max_waiting=args.max_waiting,
        queue_timeout_s=args.queue_timeout_s,
        request_timeout_s=args.request_timeout_s,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        beam_size=args.beam_size,
        api_key=args.api_key,
        keep_alive_s=args.timeout_keep_alive_s,
        shutdown_timeout_s=args.shutdown_timeout_s,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.print_model_path:
        try:
            print(bundled_model_path())
        except ModelFolderError as e:
            print(e, file=sys.stderr)
            return 1
        return 0
    serve(settings_from(args, p))
    return 0
