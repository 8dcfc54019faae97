"""What ``selfsup compare`` trains: methods, the supervised baseline and the ablations, as run specs.

Every run is a :class:`RunSpec`: a method (or ``supervised``), the settings that distinguish it, a seed,
and the folder it lives in. Folder names are derived from the settings that differ from the method's
preset, so that the same configuration asked for twice (``simclr`` in ``--methods`` and the ``mlp`` arm
of the projector ablation) is trained once and shared.

The ablations answer four questions about what matters in these methods, each from a paper's ablation,
with existing method settings:

* ``projector``: SimCLR ``projector=mlp|linear|none``. Why does removing the projection head hurt,
  and are the features before the head (h) better than after it (z)? (SimCLR §4.2, Fig. 8)
* ``loss``: SimCLR ``loss=nt_xent|nt_logistic|margin_triplet`` (SimCLR §5.1, Table 2)
* ``variance``: VICReg ``variance_mode=std|var``: hinge on the standard deviation or the variance
  (VICReg, the variance criterion of Eq. 1 and its ablation)
* ``projector-bn``: SimCLR ``hidden_bn`` x ``last_bn``: BatchNorm in the head's hidden layer, and the
  standardisation of its output (SimCLR v1 ``model_util.py`` puts BN in both places)

``--set`` keys apply to every run that has them: run and augmentation settings to all, method
settings to the methods whose ``Args`` define them; ``METHOD:key=value`` scopes a key to one method
(``supervised:label_smoothing=0.1``). A method key that no run accepts is an error.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from selfsup.config import TOP_LEVEL_SKIP as _SKIP
from selfsup.config import ConfigError, TrainConfig, apply_overrides, field_types
from selfsup.methods import method_names, split_variant
from selfsup.presets import resolve_config

SUPERVISED = "supervised"
"""The baseline every comparison adds: :class:`selfsup.methods.supervised.Supervised`, a registered method that
``selfsup methods`` does not list."""


@dataclass(frozen=True)
class Ablation:
    """A question, answered by training ``method`` once per arm (a dict of settings)."""

    name: str
    method: str
    arms: tuple[dict[str, Any], ...]
    question: str
    source: str


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation(
            "projector",
            "simclr",
            ({"projector": "mlp"}, {"projector": "linear"}, {"projector": "none"}),
            "Why does removing the projection head hurt, and are the features before the head (h) "
            "better than after it (z)?",
            "SimCLR §4.2 and Fig. 8 (Chen et al. 2020)",
        ),
        Ablation(
            "loss",
            "simclr",
            ({"loss": "nt_xent"}, {"loss": "nt_logistic"}, {"loss": "margin_triplet"}),
            "Does the contrastive loss matter: NT-Xent against NT-Logistic and the margin triplet loss?",
            "SimCLR §5.1 and Table 2 (Chen et al. 2020)",
        ),
        Ablation(
            "variance",
            "vicreg",
            ({"variance_mode": "std"}, {"variance_mode": "var"}),
            "Should VICReg's variance term hinge on the standard deviation (the paper) or on the variance?",
            "VICReg Eq. 1 and its ablation of the variance criterion (Bardes et al. 2022)",
        ),
        Ablation(
            "projector-bn",
            "simclr",
            (
                {"hidden_bn": True, "last_bn": True},
                {"hidden_bn": False, "last_bn": True},
                {"hidden_bn": True, "last_bn": False},
                {"hidden_bn": False, "last_bn": False},
            ),
            "Does BatchNorm in the projection head matter: in its hidden layer, and as a standardisation "
            "of its output (last BN)?",
            "SimCLR v1 head (model_util.py at tag 1.0: BN after both linear layers)",
        ),
    )
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of a comparison."""

    name: str
    """The run's folder under the comparison directory (unique)."""
    method: str
    """A name of :func:`selfsup.presets.method_names`, or ``supervised``."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """The settings that distinguish this run from the method at its preset (sorted)."""
    seed: int = 0

    @property
    def key(self) -> str:
        """The name without the seed: runs that differ only by seed share it."""
        return self.name.split("--seed")[0]

    @property
    def label(self) -> str:
        """``simclr (projector=none)`` for the report."""
        extra = ", ".join(f"{k}={format_value(v)}" for k, v in self.overrides)
        return f"{self.method} ({extra})" if extra else self.method


@dataclass
class Plan:
    """The runs of a comparison: the compared methods, the baseline and each ablation's arms."""

    methods: list[RunSpec] = field(default_factory=list)
    supervised: list[RunSpec] = field(default_factory=list)
    ablations: dict[str, list[list[RunSpec]]] = field(default_factory=dict)
    """ablation name -> one list of seed runs per arm."""

    def all_runs(self) -> list[RunSpec]:
        """Every distinct run, methods first, then the baseline, then the ablations' extra arms."""
        seen: dict[str, RunSpec] = {}
        for spec in [
            *self.methods,
            *self.supervised,
            *(s for arms in self.ablations.values() for arm in arms for s in arm),
        ]:
            seen.setdefault(spec.name, spec)
        seeds = list(dict.fromkeys(spec.seed for spec in seen.values()))
        return sorted(seen.values(), key=lambda spec: seeds.index(spec.seed))  # stable: all of seed 1 first


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def expand_methods(text: str) -> list[str]:
    """``all`` (every registered method, one entry per variant) or a comma-separated list."""
    if text.strip() == "all":
        names = method_names()
        return [n for n in names if not (split_variant(n)[0].variants and split_variant(n)[1] is None)]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--methods needs 'all' or a comma-separated list of methods")
    for name in names:
        split_variant(name)  # unknown names list the valid ones
    return list(dict.fromkeys(names))


def check_ablations(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ConfigError(f"unknown ablation {unknown[0]!r}. Valid: {', '.join(ABLATIONS)}")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------- --set scoping

_RUN_KEYS = {k for k in field_types(TrainConfig) if k not in _SKIP}


def _is_run_key(key: str) -> bool:
    key = key.replace("-", "_")
    return key in _RUN_KEYS or key.startswith(("aug.", "augment."))


def _method_fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(split_variant(method)[0].Args)}


def _scope_matches(scope: str, method: str) -> bool:
    return scope in (method, split_variant(method)[0].name)


def sets_for(method: str, sets: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` pairs that apply to ``method`` (see the module docstring)."""
    fields = _method_fields(method)
    out = {}
    for raw, value in sets.items():
        scope, _, key = raw.rpartition(":")
        if scope and not _scope_matches(scope, method):
            continue
        bare = key.replace("-", "_").removeprefix("method.")
        if scope or _is_run_key(key) or bare in fields:
            out[key] = value
    return out


def check_sets_used(sets: dict[str, Any], methods: list[str]) -> None:
    """Every unscoped method key must be accepted by at least one method; every scope must name one."""
    for raw in sets:
        scope, _, key = raw.rpartition(":")
        if scope:
            if not any(_scope_matches(scope, m) for m in methods):
                raise ConfigError(f"--set {raw}: {scope!r} is not one of the compared runs ({', '.join(methods)})")
            continue
        if _is_run_key(key):
            continue
        bare = key.replace("-", "_").removeprefix("method.")
        if not any(bare in _method_fields(m) for m in methods):
            valid = sorted(set().union(*(_method_fields(m) for m in methods)))
            raise ConfigError(
                f"unknown setting {key!r}: no compared method has it. Run settings: "
                f"{', '.join(sorted(_RUN_KEYS))}; aug.* keys; method settings: {', '.join(valid)}"
            )


# ----------------------------------------------------------------------------- naming and planning


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def run_name(method: str, overrides: dict[str, Any], seed: int) -> str:
    parts = [method] + [_slug(f"{k}-{format_value(v)}") for k, v in sorted(overrides.items())]
    name = "--".join(parts)
    return f"{name}--seed{seed}" if seed else name


def effective_overrides(
    method: str, preset: str, flags: dict[str, Any], sets: dict[str, Any], arm: dict[str, Any]
) -> dict[str, Any]:
    """The settings of ``arm`` that differ from what ``method`` gets without them (coerced)."""
    base = resolve_config(method, preset, flags, sets)
    probe = TrainConfig.from_dict(base.to_dict())
    apply_overrides(probe, arm, split_variant(method)[0].Args)
    out = {}
    for key in arm:
        bare = key.removeprefix("method.")
        if bare in probe.method_args:
            new, old = probe.method_args[bare], base.method_args.get(bare)
        elif key.startswith(("aug.", "augment.")):
            name = key.split(".", 1)[1]
            new, old = getattr(probe.augment, name), getattr(base.augment, name)
        else:
            new, old = getattr(probe, key), getattr(base, key)
        if new != old:
            out[bare] = new
    return out


def plan_runs(
    methods: list[str],
    ablations: list[str],
    preset: str,
    flags: dict[str, Any],
    sets: dict[str, Any],
    seeds: list[int],
    supervised: bool = True,
    ablation_seeds: list[int] | None = None,
) -> Plan:
    """Expand the compared methods, the baseline and the ablations into run specs (no training).

    ``ablation_seeds`` (default: ``seeds``) repeats only the ablation arms, which is where the run-to-run
    spread decides whether a difference is real."""
    involved = list(methods) + [ABLATIONS[a].method for a in ablations] + ([SUPERVISED] if supervised else [])
    check_sets_used(sets, involved)
    plan = Plan()
    for method in methods:
        resolve_config(method, preset, flags, sets_for(method, sets))  # fail early on bad settings
        plan.methods += [RunSpec(run_name(method, {}, s), method, (), s) for s in seeds]
    if supervised:
        plan.supervised = [RunSpec(run_name(SUPERVISED, {}, s), SUPERVISED, (), s) for s in seeds]
    for name in ablations:
        ablation = ABLATIONS[name]
        own = sets_for(ablation.method, sets)
        arms = []
        for arm in ablation.arms:
            extra = effective_overrides(ablation.method, preset, flags, own, arm)
            overrides = tuple(sorted(extra.items()))
            arms.append(
                [
                    RunSpec(run_name(ablation.method, extra, s), ablation.method, overrides, s)
                    for s in (ablation_seeds or seeds)
                ]
            )
        plan.ablations[name] = arms
    return plan


def spec_config(
    spec: RunSpec, preset: str, flags: dict[str, Any], sets: dict[str, Any], num_classes: int | None = None
) -> TrainConfig:
    """The full config of ``spec``: the method at ``preset``, the flags, its ``--set`` keys, its overrides."""
    own = {**sets_for(spec.method, sets), **dict(spec.overrides), "seed": spec.seed}
    if num_classes is not None:
        own["num_classes"] = num_classes
    return resolve_config(spec.method, preset, flags, own)
