"""The container image, built and run for real with podman (`make test-image`).

The Containerfile is built on a Debian base made here without a registry (mmdebstrap), once as
the repository holds it and once more after one gateway file changed (that rebuild must reuse
every dependency layer: its seconds are a figure). The image then runs the CPU default with a
mounted config file and an ORCHESTRA_* variable (free ports: the container shares the host's
network); the OpenAI SDK chats, streams and transcribes through it; its HEALTHCHECK passes, no
process in it is a zombie, and `podman stop` ends it within the grace period with every process
gone. Skips with the reason where podman cannot run containers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import REPO_ROOT, wait_until
from tests.fake_engine import free_port
from tests.image import podman as pm
from tests.integration.engines.whisper_process import SENTENCES, spoken_or_skip, wer

pytestmark = [pytest.mark.image, pytest.mark.timeout(int(pm.BUILD_TIMEOUT_S) * 2 + 1200)]

IMAGE = os.environ.get("IMAGE", "localhost/orchestra:latest")
TOUCHED = "gateway/__init__.py"  # the one file the rebuild changes
SOURCE_STEP = "RUN .venv/bin/pip install -q --no-deps -e ."  # the Containerfile's last RUN
READY_TIMEOUT_S = 900.0  # engine starts on 2 busy cores, then the gateway
STOP_GRACE_S = 60  # `podman stop -t`: SIGTERM, then SIGKILL after this
IN_CONTAINER = "/etc/orchestra/test.yaml"  # the mounted config
WER_BOUND = 0.25


def figure(name: str, value: Any) -> None:
    """A measured figure: printed, and kept in test-output/image/figures.json."""
    base = os.environ.get("ORCHESTRA_TEST_OUTPUT")
    path = (Path(base) if base else REPO_ROOT / "test-output") / "image" / "figures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"[figure] {name} = {value}")


def copy_context(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) in `dest`, mode and mtime kept,
    so a change made there leaves the checkout alone."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def rerun_steps(build_log: str) -> list[str]:
    """The COPY and RUN steps of a podman build that did not come from the layer cache
    (`STEP 13/28: RUN ...` not followed by `--> Using cache`), each cut to its first line."""
    steps = [step.split(": ", 1)[1] for step in build_log.split("\nSTEP ")[1:] if ": " in step]
    return [
        step.splitlines()[0][: len(SOURCE_STEP)]
        for step in steps
        if step.startswith(("COPY", "RUN")) and "--> Using cache" not in step
    ]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = pm.cannot_run()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("image")
    context = copy_context(work / "context")
    figure("image_build_s", round(pm.build(context, IMAGE, work / "build.log"), 1))
    size = int(pm.podman("image", "inspect", "-f", "{{.Size}}", IMAGE))
    figure("image_size_mb", round(size / 1e6))
    with (context / TOUCHED).open("a") as f:
        f.write("# changed by tests/image: the rebuild reuses every dependency layer\n")
    rebuilt = f"{IMAGE.rsplit(':', 1)[0]}:rebuild-test"
    try:
        log = work / "rebuild.log"
        figure("image_rebuild_after_one_file_s", round(pm.build(context, rebuilt, log), 1))
        # Only the source's own steps run again: the engine, models and dependencies are cached.
        assert rerun_steps(log.read_text()) == ["COPY . .", SOURCE_STEP], pm.tail(log)
        yield IMAGE
    finally:
        pm.podman("rmi", "--ignore", rebuilt, check=False)


@pytest.fixture(scope="module")
def container(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pm.Container]:
    """The CPU default (configs/cpu.yaml) on free ports: the file mounted, the gateway's port
    from an ORCHESTRA_* variable (which beats the file's)."""
    work = tmp_path_factory.mktemp("run")
    config = yaml.safe_load((REPO_ROOT / "configs" / "cpu.yaml").read_text())
    for server in config["servers"]:
        server["port"] = free_port()
    config["supervisor"]["port"] = free_port()
    (work / "test.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    box = pm.Container(
        image,
        f"orchestra-image-test-{uuid.uuid4().hex[:8]}",
        url=f"http://127.0.0.1:{port}",
        log=work / "container.log",
        args=[
            *("--shm-size", "1g"),  # vLLM's shared-memory queues (64 MB by default: too small)
            *("-v", f"{work / 'test.yaml'}:{IN_CONTAINER}:ro"),
            *("-e", f"ORCHESTRA_GATEWAY__PORT={port}"),  # beats the file's port
        ],
        cmd=["orchestra", "up", "--config", IN_CONTAINER],
    )
    try:
        started = time.monotonic()
        wait_until(lambda: healthy(box), timeout=READY_TIMEOUT_S, interval=1.0, what="/health ok")
        figure("image_ready_s", round(time.monotonic() - started, 1))
        yield box
    finally:
        box.remove()


def healthy(box: pm.Container) -> bool:
    if box.exited() is not None:
        raise AssertionError(f"the container exited ({box.exited()}):\n{pm.tail(box.log)}")
    try:
        reply = httpx.get(f"{box.url}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and reply.json().get("status") == "ok"


def client(box: pm.Container) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{box.url}/v1", api_key="unused", timeout=300.0, max_retries=0)


def test_the_image_is_built_to_run_as_documented(image: str) -> None:
    config = json.loads(pm.podman("image", "inspect", "-f", "{{json .Config}}", image))
    assert config["User"] == "orchestra"
    assert "/data" in config["Volumes"]
    assert config["Entrypoint"][0] == "tini" and config["Cmd"] == ["orchestra", "up"]
    # podman keeps HEALTHCHECK (docker format) beside the config, not in it
    check = json.loads(pm.podman("image", "inspect", "-f", "{{json .HealthCheck}}", image))
    assert "/health" in " ".join(check["Test"])


def test_chat_and_stream_with_the_openai_sdk(container: pm.Container) -> None:
    sdk = client(container)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    greedy = {"max_tokens": 30, "temperature": 0.0}  # SmolLM2-135M says Paris when greedy
    reply = sdk.chat.completions.create(model="smollm2", messages=question, **greedy)
    assert "paris" in (reply.choices[0].message.content or "").lower(), reply
    stream = sdk.chat.completions.create(model="smollm2", messages=question, stream=True, **greedy)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "paris" in text.lower(), text


def test_transcribe_with_whisper(
    container: pm.Container, tmp_path_factory: pytest.TempPathFactory
) -> None:
    speech = spoken_or_skip(tmp_path_factory.mktemp("speech"), SENTENCES)
    sdk = client(container)
    for name, text in SENTENCES.items():
        with speech[name].open("rb") as audio:
            heard = sdk.audio.transcriptions.create(model="whisper-1", file=audio).text
        assert wer(text, heard) <= WER_BOUND, (text, heard)


def test_healthcheck_passes_and_no_process_is_root_or_a_zombie(container: pm.Container) -> None:
    pm.podman("healthcheck", "run", container.name)  # exit 0: healthy
    users = pm.podman("top", container.name, "user").split()[1:]
    assert users and set(users) == {"orchestra"}, users
    states = container.exec("python3", "-c", ZOMBIES)
    assert states.strip() == "", f"zombies in the container: {states}"


# Each process of the container whose state (the field after the command's parentheses) is Z.
ZOMBIES = """
import pathlib
for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
        text = stat.read_text()
    except OSError:
        continue
    if text.rsplit(")", 1)[1].split()[0] == "Z":
        print(text)
"""


def test_stop_ends_every_process_within_the_grace_period(container: pm.Container) -> None:
    pids = container.host_pids()
    assert len(pids) >= 4, pids  # tini, up, the supervisor, the gateway (and the engines)
    seconds, status = container.stop(STOP_GRACE_S)
    figure("image_stop_s", round(seconds, 1))
    assert status == 0, f"exit status {status} (137: killed at the grace period)"
    assert seconds < STOP_GRACE_S
    assert not container.exists()
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"processes left after the stop: {alive}"
