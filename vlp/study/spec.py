"""A study's YAML (configs/studies/*.yaml): recipes × seeds × one varied setting, and what to evaluate.

name: main                          # results go to benchmarks/results/study/<name>/ by default
description: CLIP control vs NegCLIP vs DeGLA ...
control: clip                       # the recipe every other one is tested against, item by item
seeds: [0, 1, 2]                    # train.seed of each cell
overrides: [train.threads=2]        # given to every cell, before the recipe's own
recipes:
  clip: {config: configs/negclip.yaml, overrides: ["objective.terms={clip: 1.0}", data.negatives=0]}
  negclip: {config: configs/negclip.yaml}
vary: {key: train.max_steps, values: [100, 200]}    # optional: one setting, every value a column
evaluate:
  start: runs/demo/export           # optional: the model every recipe starts from, scored once
  zeroshot: {test: data/shapes/zeroshot:test, heldout: data/shapes/zeroshot:heldout}
  probes: {shapes: data/shapes/compositional}       # SugarCrepe-format folders (heldout/ included)
  diagnostics: {probe_train: 1000, probe_test: 500} # optional: text cosines + relation probe
  headline: {gain: shapes/replace_rel, cost: zeroshot/heldout}   # the trade-off plot's axes
results: benchmarks/results/study/main   # optional
runs: runs/study/main                    # optional: training folders (exports kept, checkpoints not)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class StudyError(ValueError):
    """The study file is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class Recipe:
    name: str
    config: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    zeroshot: dict[str, str]
    probes: dict[str, str]
    start: str = ""
    diagnostics: dict[str, int] | None = None
    headline: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    name: str
    path: str
    recipes: tuple[Recipe, ...]
    seeds: tuple[int, ...]
    control: str
    evaluate: Evaluation
    overrides: tuple[str, ...] = ()
    vary_key: str = ""
    vary_values: tuple[Any, ...] = (None,)
    results: str = ""
    runs: str = ""
    description: str = ""


_TOP = {"name", "description", "control", "seeds", "overrides", "recipes", "vary", "evaluate", "results", "runs"}
_EVAL = {"start", "zeroshot", "probes", "diagnostics", "headline"}


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where} must be a list of strings (key=value overrides), got {value!r}")
    return tuple(value)


def _mapping(where: str, value: Any, required: bool = True) -> dict:
    if not required and (value is None or value == {}):
        return {}
    if not isinstance(value, dict) or not value:
        raise StudyError(f"{where} must be a non-empty mapping, got {value!r}")
    return value


def _recipes(path: Path, raw: dict) -> list[Recipe]:
    """The ``recipes`` mapping: each a recipe YAML that exists, names a cell can carry."""
    recipes = []
    for rname, body in _mapping(f"{path}: recipes", raw.get("recipes")).items():
        body = _mapping(f"{path}: recipes.{rname}", body)
        extra = sorted(set(body) - {"config", "overrides"})
        if extra or not isinstance(body.get("config"), str):
            raise StudyError(f"{path}: recipes.{rname} needs 'config' (a recipe YAML) and optional 'overrides'")
        if not Path(body["config"]).is_file():
            raise StudyError(f"{path}: recipes.{rname}.config: {body['config']} does not exist")
        recipes.append(
            Recipe(str(rname), body["config"], _strings(f"{path}: recipes.{rname}.overrides", body.get("overrides")))
        )
    names = [r.name for r in recipes]
    bad = [n for n in names if "__" in n or "/" in n or n == "start"]
    if bad:
        raise StudyError(f"{path}: recipe names may not contain '__' or '/' nor be 'start': {bad}")
    return recipes


def _evaluation(path: Path, raw: dict) -> Evaluation:
    """The ``evaluate`` mapping: zero-shot sets and/or probes, diagnostics, the headline metrics."""
    ev = _mapping(f"{path}: evaluate", raw.get("evaluate"))
    unknown = sorted(set(ev) - _EVAL)
    if unknown:
        raise StudyError(f"{path}: evaluate: unknown key(s) {unknown}; allowed: {sorted(_EVAL)}")
    zeroshot = {str(k): str(v) for k, v in _mapping(f"{path}: evaluate.zeroshot", ev.get("zeroshot"), False).items()}
    probes = {str(k): str(v) for k, v in _mapping(f"{path}: evaluate.probes", ev.get("probes"), False).items()}
    if not zeroshot and not probes:
        raise StudyError(f"{path}: evaluate needs zeroshot and/or probes")
    diagnostics = ev.get("diagnostics")
    if diagnostics is not None and not (
        isinstance(diagnostics, dict) and set(diagnostics) <= {"probe_train", "probe_test"}
    ):
        raise StudyError(f"{path}: evaluate.diagnostics must be a mapping of probe_train / probe_test")
    headline = ev.get("headline") or {}
    if headline and set(headline) != {"gain", "cost"}:
        raise StudyError(f"{path}: evaluate.headline needs exactly 'gain' and 'cost' (metric names)")
    return Evaluation(zeroshot, probes, str(ev.get("start") or ""), diagnostics, dict(headline))


def load_study(path: str | Path) -> Study:
    """Parse and check a study file; every mistake is one StudyError naming ``path`` and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exn:
        raise StudyError(f"cannot read study file {path}: {exn.strerror}") from None
    except yaml.YAMLError as exn:
        raise StudyError(f"{path}: not valid YAML ({exn})") from None
    raw = _mapping(str(path), raw)
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(_TOP)}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise StudyError(f"{path}: name must be letters, digits, '-' or '_', got {name!r}")

    recipes = _recipes(path, raw)
    names = [r.name for r in recipes]

    seeds = raw.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise StudyError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    control = raw.get("control", names[0])
    if control not in names:
        raise StudyError(f"{path}: control {control!r} is not one of the recipes {names}")

    vary_key, vary_values = "", (None,)
    if raw.get("vary") is not None:
        vary = _mapping(f"{path}: vary", raw["vary"])
        if set(vary) != {"key", "values"} or not isinstance(vary["values"], list) or not vary["values"]:
            raise StudyError(f"{path}: vary needs exactly 'key' (a config key) and 'values' (a non-empty list)")
        vary_key, vary_values = str(vary["key"]), tuple(vary["values"])

    evaluation = _evaluation(path, raw)
    return Study(
        name=name,
        path=str(path),
        recipes=tuple(recipes),
        seeds=tuple(seeds),
        control=control,
        evaluate=evaluation,
        overrides=_strings(f"{path}: overrides", raw.get("overrides")),
        vary_key=vary_key,
        vary_values=vary_values,
        results=str(raw.get("results") or f"benchmarks/results/study/{name}"),
        runs=str(raw.get("runs") or f"runs/study/{name}"),
        description=str(raw.get("description") or ""),
    )
