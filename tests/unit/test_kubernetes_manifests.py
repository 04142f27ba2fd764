"""deploy/kubernetes/ validated offline (never applied to a live cluster here): every core
resource against Kubernetes' schemas with PyPI's kubernetes-validate (strict); the RayCluster,
whose CRD schema it lacks, through its pod templates; the configs it carries parse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestra.config import parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.33.0"


def _resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(DEPLOY.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_every_resource_is_valid_kubernetes() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for name, doc in _resources():
        kinds.add(doc["kind"])
        if doc["kind"] == "RayCluster":
            groups = [doc["spec"]["headGroupSpec"], *doc["spec"]["workerGroupSpecs"]]
            for group in groups:
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}
                kv.validate({**pod, "spec": group["template"]["spec"]}, K8S_VERSION, strict=True)
                assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name
        else:
            kv.validate(doc, K8S_VERSION, strict=True)
    assert {"RayCluster", "Deployment", "Service", "Secret", "ConfigMap", "Job"} <= kinds


def test_the_configs_in_the_config_map_parse() -> None:
    (config_map,) = [doc for _, doc in _resources() if doc["kind"] == "ConfigMap"]
    supervisors = parse_config(yaml.safe_load(config_map["data"]["ray-supervisors.yaml"]))
    gateway = parse_config(yaml.safe_load(config_map["data"]["ray-gateway.yaml"]))
    assert supervisors.ray is not None and supervisors.ray.node_resource == "orchestra"
    assert gateway.ray is not None and gateway.ray.address == "orchestra-head-svc:6379"
    assert not gateway.servers  # the models come from the supervisors
