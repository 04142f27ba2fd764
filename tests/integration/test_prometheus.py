"""monitoring/ checked on a real Prometheus.

Installs Debian's prometheus when missing (root + apt), runs `promtool check config|rules`,
starts the supervisor (managing fake engines) and the gateway, scrapes them with a Prometheus
on loopback using a config derived from monitoring/prometheus.yml (engines found through the
supervisor's /sd/engines), drives traffic and the events the panels and alerts show (an error,
a retry, a stream cut, an on-demand swap, a swap storm, a FAILED engine), then evaluates every
PromQL expression of the dashboard and the rules through the HTTP API: each must parse and
return data, except the few allow-listed below with their reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestra.health import wait_healthy_sync
from tests.debian import apt_install
from tests.fake_engine import FakeEngineProcess, free_port

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "monitoring"
DASHBOARD = MON / "grafana" / "dashboards" / "orchestra.json"
RULES = MON / "rules" / "orchestra.rules.yml"
FAKE = str(REPO / "tests" / "fake_engine.py")
TOKEN = "prometheus-test-admin-token"

# Expressions that are empty unless an event happened that this test cannot cause here.
ALLOW_EMPTY = {
    "orchestra_fallback_total": "fallback needs an Ollama server (/api/version); none runs here",
}


def _install_prometheus() -> str | None:
    """None when promtool and prometheus are there (installed if needed), else why not."""
    return apt_install("prometheus", "promtool", "prometheus")


@pytest.fixture(scope="module")
def prom_bins() -> None:
    why = _install_prometheus()
    if why:
        pytest.skip(why)


def test_promtool_checks(prom_bins: None) -> None:
    out = subprocess.run(
        ["promtool", "check", "config", str(MON / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ---- helpers -------------------------------------------------------------------------------
def _http(
    method: str, url: str, body: Any = None, timeout: float = 30, token: str | None = None
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), e.read()
    except OSError:
        return 0, b""


def _wait(what: str, cond: Any, timeout: float = 30.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


def _wait_replicas_healthy(gw: str, model: str) -> None:
    def healthy() -> bool:
        status = json.loads(_http("GET", gw + "/admin/status")[1] or b"{}")
        replicas = status.get("models", {}).get(model, {}).get("replicas", [])
        return bool(replicas) and all(r["healthy"] for r in replicas)

    _wait(f"{model}'s replicas back in rotation", healthy, 30, every=0.05)


def _wait_scraped_and_evaluated_after(prom: str, since: float) -> None:
    """Every target scraped, and every rule group evaluated, twice after `since` (Unix time):
    the last events are in the TSDB and the alert rules have seen them."""

    def stamp(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    def done() -> bool:
        targets = json.loads(_http("GET", prom + "/api/v1/targets")[1])["data"]["activeTargets"]
        groups = json.loads(_http("GET", prom + "/api/v1/rules")[1])["data"]["groups"]
        scraped = all(stamp(t["lastScrape"]) > since + 1.0 for t in targets if t["health"] == "up")
        evaluated = all(stamp(g["lastEvaluation"]) > since + 1.0 for g in groups)
        return bool(targets) and scraped and evaluated

    _wait("scrapes and rule evaluations after the last event", done, 30, every=0.2)


class _Proc:
    def __init__(self, name: str, cmd: list[str], log_dir: Path) -> None:
        self.log = log_dir / f"{name}.log"
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self, grace: float = 15.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._fh.close()


def _chat(gw: str, model: str, stream: bool = False) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return _http("POST", gw + "/v1/chat/completions", body, timeout=60)[0]


def _expressions() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboard and the rules."""
    out: list[tuple[str, str]] = []
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def _grafana_vars(expr: str) -> str:
    return expr.replace("$model", ".*").replace("$__rate_interval", "1m")


# ---- the stack ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(prom_bins: None) -> Iterator[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="orchestra-prom-"))
    weights = tmp / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(os.urandom(1 << 20))
    sup_port, gw_port, prom_port = free_port(), free_port(), free_port()
    static = FakeEngineProcess("--served-model-name", "static", name="static").start()
    static2 = FakeEngineProcess("--served-model-name", "static", name="static").start()
    config = {
        "servers": [
            {"name": "alpha", "model": str(weights), "port": free_port()},
            {"name": "static", "replicas": [{"url": static.url}, {"url": static2.url}]},
        ],
        "rotation_pool": [
            {"name": "beta", "model": str(weights), "port": free_port()},
            {
                "name": "broken",
                "model": str(weights),
                "port": free_port(),
                "extra_args": ["--fail-start"],
            },
        ],
        "gateway": {
            "port": gw_port,
            "supervisor_url": f"http://127.0.0.1:{sup_port}",
            "routing_refresh_s": 0.2,
            "retries": {"backoff_s": 0.0},
            "unhealthy_cooldown_s": 0.5,
        },
        # With an admin token, as a supervisor reachable off loopback must have: the gateway
        # and Prometheus (scrape and engine discovery) have to send it.
        "supervisor": {
            "port": sup_port,
            "gpus": [],
            "state_dir": str(tmp / "run"),
            "admin_token": TOKEN,
        },
        "engine": {
            "command": [sys.executable, FAKE],
            "model_arg": "--model",
            "startup_timeout_s": 20,
            "stop_timeout_s": 5,
            "max_restarts": 0,
            "backoff_initial_s": 0,
            "log_dir": str(tmp / "logs"),
        },
        "rotation": {"enabled": False},
    }
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    procs: list[_Proc] = []
    try:
        sup = _Proc(
            "supervisor", [sys.executable, "-m", "orchestra.supervisor", "--config", str(cfg)], tmp
        )
        procs.append(sup)
        sup_url = f"http://127.0.0.1:{sup_port}"
        _wait(
            "supervisor with alpha ready",
            lambda: (
                b'"ready"' in _http("GET", sup_url + "/models/alpha", token=TOKEN)[1]
                or sup.proc.poll() is not None
            ),
            30,
        )
        assert sup.proc.poll() is None, sup.tail()
        gw = _Proc(
            "gateway", [sys.executable, "-m", "orchestra.gateway", "--config", str(cfg)], tmp
        )
        procs.append(gw)
        gw_url = f"http://127.0.0.1:{gw_port}"
        wait_healthy_sync(gw_url, timeout_s=30, interval_s=0.2, probe_timeout_s=30)

        # Prometheus config derived from monitoring/prometheus.yml: our ports, 1 s scrapes
        prom_cfg = yaml.safe_load((MON / "prometheus.yml").read_text())
        prom_cfg["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
        prom_cfg["rule_files"] = [str(RULES)]
        ports = {
            "127.0.0.1:8000": f"127.0.0.1:{gw_port}",
            "127.0.0.1:8100": f"127.0.0.1:{sup_port}",
        }
        for job in prom_cfg["scrape_configs"]:
            for sc in job.get("static_configs", []):
                sc["targets"] = [ports.get(t, t) for t in sc["targets"]]
            for sd in job.get("http_sd_configs", []):
                sd["url"] = sd["url"].replace("127.0.0.1:8100", f"127.0.0.1:{sup_port}")
                sd["refresh_interval"] = "1s"
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        (tmp / "supervisor_token").write_text(TOKEN + "\n")  # credentials_file, beside it
        prom_url = f"http://127.0.0.1:{prom_port}"
        prom = _Proc(
            "prometheus",
            [
                "prometheus",
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp,
        )
        procs.append(prom)
        _wait("prometheus", lambda: _http("GET", prom_url + "/-/ready")[0] == 200, 30)
        yield {
            "tmp": tmp,
            "gw": gw_url,
            "sup": sup_url,
            "prom": prom_url,
            "static": (static, static2),
            "procs": procs,
        }
    finally:
        for p in reversed(procs):
            p.stop()
        static.stop()
        static2.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _query(prom: str, expr: str) -> dict[str, Any]:
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, raw = _http("GET", url)
    try:
        return dict(json.loads(raw))
    except ValueError:
        return {"status": "error", "error": f"HTTP {status}: {raw[:200]!r}"}


def _drive(s: dict[str, Any]) -> None:
    gw, sup, static = s["gw"], s["sup"], s["static"]
    for _ in range(10):
        assert _chat(gw, "alpha") == 200
        assert _chat(gw, "static") == 200
        assert _chat(gw, "alpha", stream=True) == 200
    # on demand: beta is cold, the first request makes the supervisor swap it in
    assert _chat(gw, "beta") == 200
    # errors answered by the upstreams (500 passes through), in two bursts with scrapes
    # between: rate() sees an increase only once Prometheus has the 5xx series already
    for burst in range(2):
        for engine in static:
            engine.set_fault("500", count=2)
        for _ in range(3):
            assert _chat(gw, "static") >= 500
        if burst == 0:
            _wait_scraped_and_evaluated_after(s["prom"], time.time())
        _wait_replicas_healthy(gw, "static")
    # a 503 from one replica: retried on the other before the first byte
    static[0].set_fault("503", count=1)
    for _ in range(2):
        _chat(gw, "static")
    _wait_replicas_healthy(gw, "static")  # back after its Retry-After: 1
    # the connection dropped mid-reply (upstream error), then a stream cut after the first byte
    for engine in static:
        engine.set_fault("cut-mid-stream", count=1)
    _chat(gw, "static")
    for engine in static:
        engine.set_fault("cut-mid-stream", count=1)
    _chat(gw, "static", stream=True)
    # swap storm: beta in and out five more times
    for _ in range(5):
        assert _http("POST", sup + "/models/beta/unload", token=TOKEN)[0] == 200
        assert _http("POST", sup + "/models/beta/ensure", timeout=60, token=TOKEN)[0] == 200
    # a model that cannot start: FAILED (max_restarts 0)
    _http("POST", sup + "/models/broken/ensure?timeout_s=20", timeout=60, token=TOKEN)
    for _ in range(5):
        assert _chat(gw, "alpha") == 200


def test_every_dashboard_and_rule_expression_returns_data(stack: dict[str, Any]) -> None:
    prom = stack["prom"]
    _wait(
        "engine targets via /sd/engines",
        lambda: _query(prom, 'count(up{job="vllm"} == 1) >= 1').get("data", {}).get("result"),
        30,
    )
    _drive(stack)
    _wait_scraped_and_evaluated_after(prom, time.time())

    problems: list[str] = []
    allowed: list[str] = []
    exprs = _expressions()
    assert len(exprs) >= 30
    # every metric name used must be known to Prometheus
    names = set(json.loads(_http("GET", prom + "/api/v1/label/__name__/values")[1])["data"])
    for where, expr in exprs:
        expr = _grafana_vars(expr)
        used = set(re.findall(r"\b((?:orchestra|vllm)[a-z_:]*[a-z])\b", expr))
        allow = next((why for m, why in ALLOW_EMPTY.items() if m in expr), None)
        missing = {n for n in used if n not in names and ":" not in n.removeprefix("vllm:")}
        missing = {n for n in missing if not n.startswith("orchestra:")}
        if missing and not allow:
            problems.append(f"{where}: unknown metric(s) {sorted(missing)}")
        reply = _query(prom, expr)
        if reply.get("status") != "success":
            problems.append(f"{where}: does not evaluate: {reply.get('error')}: {expr}")
            continue
        if not reply["data"]["result"]:
            if allow:
                allowed.append(f"{where}: {allow}")
            else:
                problems.append(f"{where}: no data: {expr}")
    # alerts must be known to Prometheus' rule manager, and those we provoked must be pending
    rules = json.loads(_http("GET", prom + "/api/v1/rules")[1])["data"]["groups"]
    states = {
        r["name"]: r.get("state") for g in rules for r in g["rules"] if r["type"] == "alerting"
    }
    assert set(states) == {"OrchestraEngineFailed", "OrchestraHighErrorRatio", "OrchestraSwapStorm"}
    for name, state in states.items():
        if state not in ("pending", "firing"):
            problems.append(f"alert {name} is {state} after its event was driven")
    logs = "\n".join(f"--- {p.log.name}\n{p.tail()}" for p in stack["procs"]) if problems else ""
    assert not problems, "\n".join(problems) + "\n" + logs
    print(f"{len(exprs)} expressions evaluated; allowed empty: {allowed}")
