"""The Ray side without Ray: the `ray:` section, the node's copy of the config an actor writes,
which nodes get a supervisor, and the actor names both sides agree on."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.cluster.actor import node_config
from orchestra.cluster.names import eligible, node_of, supervisor_name
from orchestra.cluster.reconcile import absolute_paths
from orchestra.config import ConfigError, parse_config


def test_ray_and_supervisors_exclude_each_other_and_errors_name_the_path() -> None:
    both = {"ray": {}, "supervisors": [{"name": "a", "url": "http://10.0.0.2:8100"}]}
    with pytest.raises(ConfigError, match="ray: and supervisors: exclude each other"):
        parse_config(both)
    with pytest.raises(ConfigError, match=r"ray\.discover_s"):
        parse_config({"ray": {"discover_s": 0}})
    with pytest.raises(ConfigError, match=r"ray\.adress"):
        parse_config({"ray": {"adress": "x"}})
    assert parse_config({"ray": {"address": "10.0.0.1:6379"}}).ray is not None


def test_the_node_copy_binds_the_node_and_keeps_state_per_address(tmp_path: Path) -> None:
    raw = absolute_paths(
        {
            "servers": [{"name": "m", "model": "/models/m"}],
            "supervisor": {"admin_token": "t", "state_dir": "run"},
            "engine": {"host": "127.0.0.1"},
            "ray": {"admin_token": "from-ray"},
        },
        tmp_path,
    )
    copy = node_config(raw, "10.0.0.2")
    assert copy["supervisor"]["host"] == "10.0.0.2"
    assert copy["supervisor"]["admin_token"] == "from-ray"
    assert copy["supervisor"]["state_dir"] == str(tmp_path / "run" / "10.0.0.2")
    assert copy["engine"]["host"] == copy["engine"]["advertise_host"] == "10.0.0.2"
    assert copy["engine"]["log_dir"] == str(tmp_path / "logs" / "10.0.0.2")
    assert raw["engine"]["host"] == "127.0.0.1"  # the original is untouched
    parse_config(copy)  # valid: off loopback with its token


def test_which_nodes_get_a_supervisor_and_names() -> None:
    assert eligible({"GPU": 2.0, "CPU": 8.0}, None)
    assert not eligible({"CPU": 8.0}, None)
    assert eligible({"CPU": 8.0, "orchestra": 1.0}, "orchestra")
    assert not eligible({"GPU": 1.0}, "orchestra")
    assert node_of(supervisor_name("abc123")) == "abc123"
    assert node_of("orchestra-reconciler") is None
