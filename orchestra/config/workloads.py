"""Config sections for the workloads beyond one-model chat: ensembles, aliases, fallback chains,
LoRA adapters, uploads. `orchestra/config/root.py` holds them in the one config model; the checks
across sections (names that must exist, chains that must not loop) live here and name the YAML
path of the bad value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EnsembleStrategy = Literal["all", "first", "vote"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdapterConfig(_Strict):
    """A LoRA adapter served by its server's engine (`--lora-modules NAME=PATH`)."""

    name: str = Field(min_length=1, description="the `model` clients send for this adapter")
    path: str = Field(min_length=1, description="folder with adapter_config.json + weights")


class EnsembleConfig(_Strict):
    name: str = Field(min_length=1)
    models: list[str] = Field(min_length=2, description="members: servers, aliases or adapters")
    strategy: EnsembleStrategy = "all"
    timeout_s: float = Field(300.0, gt=0, description="members not done by then are cut off")


class UploadConfig(_Strict):
    """Multipart uploads (audio): spooled to disk past `spool_bytes`, refused past `max_bytes`."""

    max_bytes: int = Field(25 * 1024 * 1024, gt=0, description="larger uploads get 413")
    spool_bytes: int = Field(1024 * 1024, ge=0, description="kept in memory up to this size")


def check_workloads(
    servers: Mapping[str, str],
    adapter_list: Iterable[tuple[str, str]],
    aliases: Mapping[str, str],
    fallbacks: Mapping[str, list[str]],
    ensembles: Iterable[EnsembleConfig],
) -> None:
    """Cross-section checks. `servers` maps a name to its YAML path; `adapter_list` holds
    (name, YAML path) pairs.

    Raises ValueError whose message starts with the YAML path of the bad value."""
    taken = {**servers}
    adapters: dict[str, str] = {}
    for name, where in adapter_list:
        _claim(taken, name, where)
        adapters[name] = where
    ensemble_list = list(ensembles)
    for index, ensemble in enumerate(ensemble_list):
        _claim(taken, ensemble.name, f"ensembles[{index}].name")
    for alias in aliases:
        _claim(taken, alias, f"aliases.{alias}")
    ensemble_names = {e.name for e in ensemble_list}
    for alias, target in aliases.items():
        if target not in servers and target not in adapters and target not in ensemble_names:
            raise ValueError(
                f"aliases.{alias}: {target!r} is not a server, adapter or ensemble "
                "(aliases cannot point at aliases)"
            )
    servable = {*servers, *adapters}
    for index, ensemble in enumerate(ensemble_list):
        for m, member in enumerate(ensemble.models):
            if member not in servable and member not in aliases:
                raise ValueError(
                    f"ensembles[{index}].models[{m}]: {member!r} is not a server, adapter or "
                    "alias (ensembles cannot nest)"
                )
            if aliases.get(member) in ensemble_names:
                raise ValueError(
                    f"ensembles[{index}].models[{m}]: alias {member!r} names an ensemble "
                    "(ensembles cannot nest)"
                )
    for source, chain in fallbacks.items():
        if source not in servable:
            raise ValueError(f"fallbacks.{source}: {source!r} is not a server or adapter")
        for i, target in enumerate(chain):
            if target not in servable:
                raise ValueError(f"fallbacks.{source}[{i}]: {target!r} is not a server or adapter")
    _check_no_loop(fallbacks)


def _claim(taken: dict[str, str], name: str, where: str) -> None:
    if name in taken:
        raise ValueError(f"{where}: {name!r} is already used at {taken[name]}")
    taken[name] = where


def _check_no_loop(fallbacks: Mapping[str, list[str]]) -> None:
    """A cycle in the fallback graph is an error naming the edge that closes it."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        for i, target in enumerate(fallbacks.get(node, [])):
            if target in stack:
                cycle = " -> ".join([*stack[stack.index(target) :], target])
                raise ValueError(f"fallbacks.{node}[{i}]: {target!r} closes a loop ({cycle})")
            if target not in done:
                visit(target, [*stack, target])
        done.add(node)

    for source in fallbacks:
        if source not in done:
            visit(source, [source])


def fallback_chain(model: str, fallbacks: Mapping[str, list[str]]) -> list[str]:
    """`model` then its fallbacks, each followed by its own, depth first, each model once."""
    out: list[str] = []

    def visit(node: str) -> None:
        if node in out:
            return
        out.append(node)
        for target in fallbacks.get(node, []):
            visit(target)

    visit(model)
    return out
