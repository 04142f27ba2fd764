"""A chain's targets (`pipeline/aliases.ModelMap.chain`): the configured fallbacks in order,
then Ollama as the ordinary last target, for the first model of the chain that
`fallback.ollama.models` maps, and none for a chain it maps nothing of."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from orchestra.config import parse_config
from orchestra.gateway.pipeline.aliases import ENGINES, OLLAMA, ModelMap, Target


def _models() -> ModelMap:
    config = parse_config(
        {
            "servers": [
                {"name": "a", "url": "http://127.0.0.1:9"},
                {"name": "b", "url": "http://127.0.0.1:10"},
                {"name": "c", "url": "http://127.0.0.1:11"},
            ],
            "fallbacks": {"a": ["b"]},
            "fallback": {"ollama": {"models": {"b": "llama3.2:1b"}}},
        }
    )
    return ModelMap(config, CollectorRegistry())


def test_ollama_is_the_last_target_for_the_first_mapped_model() -> None:
    chain = _models().chain("a")
    assert chain == [Target("a", "a"), Target("b", "b"), Target("b", "b", OLLAMA)]
    assert [t.backend for t in chain] == [ENGINES, ENGINES, OLLAMA]
    assert [t.served_by for t in chain] == ["a", "b", "ollama:b"]


def test_a_chain_ollama_maps_nothing_of_has_no_ollama_target() -> None:
    assert _models().chain("c") == [Target("c", "c")]
