"""Config of ensembles, aliases, fallback chains and adapters: bad values name their YAML path."""

from __future__ import annotations

from typing import Any

import pytest

from orchestra.config import ConfigError, parse_config
from orchestra.config.workloads import fallback_chain

SERVERS: dict[str, Any] = {
    "servers": [
        {"name": "a", "url": "http://127.0.0.1:1"},
        {"name": "b", "url": "http://127.0.0.1:2", "adapters": [{"name": "b-sql", "path": "/x"}]},
        {"name": "c", "url": "http://127.0.0.1:3"},
    ]
}


def _error(extra: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({**SERVERS, **extra})
    return str(caught.value)


def test_valid_workloads_parse() -> None:
    config = parse_config(
        {
            **SERVERS,
            "aliases": {"gpt-4o": "a", "team": "trio"},
            "fallbacks": {"a": ["b", "c"], "b": ["c"]},
            "ensembles": [{"name": "trio", "models": ["a", "b-sql", "gpt-4o"], "strategy": "vote"}],
        }
    )
    assert config.ensembles[0].strategy == "vote"
    assert config.servers[1].adapters[0].name == "b-sql"
    assert fallback_chain("a", config.fallbacks) == ["a", "b", "c"]


def test_a_looping_chain_names_the_edge() -> None:
    message = _error({"fallbacks": {"a": ["b"], "b": ["c"], "c": ["a"]}})
    assert "fallbacks.c[0]: 'a' closes a loop (a -> b -> c -> a)" in message


def test_a_self_loop_is_an_error() -> None:
    assert "fallbacks.a[1]: 'a' closes a loop" in _error({"fallbacks": {"a": ["b", "a"]}})


def test_unknown_names_are_errors() -> None:
    assert "aliases.x: 'nope' is not a server" in _error({"aliases": {"x": "nope"}})
    assert "fallbacks.a[0]: 'nope'" in _error({"fallbacks": {"a": ["nope"]}})
    message = _error({"ensembles": [{"name": "e", "models": ["a", "nope"]}]})
    assert "ensembles[0].models[1]: 'nope'" in message


def test_names_must_be_unique_across_kinds() -> None:
    assert "aliases.a: 'a' is already used at servers[0]" in _error({"aliases": {"a": "b"}})
    message = _error({"ensembles": [{"name": "b-sql", "models": ["a", "b"]}]})
    assert "ensembles[0].name: 'b-sql' is already used at servers[1].adapters[0].name" in message


def test_ensembles_do_not_nest() -> None:
    message = _error(
        {
            "aliases": {"x": "e"},
            "ensembles": [{"name": "e", "models": ["a", "b"]}, {"name": "f", "models": ["a", "x"]}],
        }
    )
    assert "ensembles[1].models[1]: alias 'x' names an ensemble" in message


def test_an_ensemble_needs_two_members_and_a_known_strategy() -> None:
    assert "ensembles[0].models" in _error({"ensembles": [{"name": "e", "models": ["a"]}]})
    message = _error({"ensembles": [{"name": "e", "models": ["a", "b"], "strategy": "best"}]})
    assert "ensembles[0].strategy" in message
