"""One image name: the tag `make image` builds (the Makefile's IMAGE) is the one the Kubernetes
manifests and compose.yaml run; compose.yaml's Prometheus and Grafana use monitoring/'s files
in Orchestra's network namespace (where monitoring/prometheus.yml's loopback targets live)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO_ROOT


def makefile_image() -> str:
    found = re.search(r"^IMAGE \?= (\S+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile sets no IMAGE default"
    return found.group(1)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return loaded


def test_manifests_run_the_image_make_image_tags() -> None:
    images = [
        (path.name, line.split("image:", 1)[1].split("#")[0].strip())
        for path in sorted((REPO_ROOT / "deploy" / "kubernetes").glob("*.yaml"))
        for line in path.read_text().splitlines()
        if line.strip().startswith("image:")
    ]
    assert len(images) >= 4, images  # the gateway, the job, the Ray head and workers
    assert {image for _, image in images} == {makefile_image()}, images


def test_compose_runs_the_same_image_named_by_the_same_variable() -> None:
    assert compose()["services"]["orchestra"]["image"] == f"${{IMAGE:-{makefile_image()}}}"


def test_compose_monitoring_shares_orchestras_network_and_files() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["network_mode"] == "service:orchestra", name
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which is missing"
    scraped = yaml.safe_load((REPO_ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = [
        target
        for job in scraped["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    # Loopback targets: reachable from Prometheus only inside Orchestra's network namespace.
    assert targets and all(t.startswith("127.0.0.1:") for t in targets), targets
    assert "/data" in " ".join(services["orchestra"]["volumes"])
