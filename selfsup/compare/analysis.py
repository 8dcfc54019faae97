"""The measured answers to the ablation questions, written from the numbers of the ablation runs.

Every comparison of two arms is a :class:`Difference` with a noise estimate, so that the text can say
whether the budget settles it:

* test-set noise: the binomial standard error of an accuracy p on n test images, √(p(1 − p)/n),
  combined for two arms as √(SE_a² + SE_b²) (conservative: both arms see the same test images);
* run-to-run noise, when arms were trained with several seeds (``--seeds``): the pooled sample
  standard deviation s over the arms' seeds, giving s·√(1/k_a + 1/k_b) for the difference of means.

σ is the root sum of squares of the two. A difference counts as settled when |d| ≥ 2σ. With one
seed the run-to-run part is unknown and the text says so: short CPU runs can differ by more
between seeds than the test-set error alone suggests.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from selfsup.compare.results import Aggregate

PRIMARY = "linear_top1_h"
FALLBACK = "knn_top1_h"


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def points(value: float) -> str:
    return f"{100 * value:+.1f} points"


def primary_key(arms: Sequence[Aggregate]) -> str:
    """The linear probe on h when every arm has it, else kNN on h."""
    return PRIMARY if all(a.mean(PRIMARY) is not None for a in arms) else FALLBACK


def test_images(arms: Sequence[Aggregate]) -> int:
    counts = [n for a in arms if (n := a.first.evaluation.get("test_images"))]
    return int(min(counts)) if counts else 0


def pooled_seed_spread(arms: Sequence[Aggregate], key: str) -> tuple[float | None, int]:
    """Pooled std over seeds of the arms with at least 2 seeds, and its degrees of freedom."""
    total, dof = 0.0, 0
    for arm in arms:
        values = arm.values(key)
        if len(values) >= 2:
            total += statistics.variance(values) * (len(values) - 1)
            dof += len(values) - 1
    return (math.sqrt(total / dof), dof) if dof else (None, 0)


@dataclass
class Difference:
    """``value = b − a`` (a fraction), with σ from the test set and, if measured, from seeds."""

    value: float
    sigma: float
    seeds_measured: bool

    @property
    def settled(self) -> bool:
        return self.sigma > 0 and abs(self.value) >= 2 * self.sigma

    def text(self) -> str:
        ratio = abs(self.value) / self.sigma if self.sigma > 0 else float("inf")
        where = "test-set and seed noise" if self.seeds_measured else "test-set noise only"
        verdict = "larger than the noise" if self.settled else "within the noise"
        return f"{points(self.value)} ({verdict}: {ratio:.1f} σ, σ = {100 * self.sigma:.1f} points from {where})"


def difference(a: Aggregate, b: Aggregate, key: str, arms: Sequence[Aggregate]) -> Difference | None:
    """b − a for metric ``key``; ``arms`` are all arms of the question (for the pooled seed spread)."""
    mean_a, mean_b = a.mean(key), b.mean(key)
    if mean_a is None or mean_b is None:
        return None
    n = test_images(arms) or 1
    se_a = math.sqrt(max(mean_a * (1 - mean_a), 1e-12) / n)
    se_b = math.sqrt(max(mean_b * (1 - mean_b), 1e-12) / n)
    variance = se_a**2 + se_b**2
    spread, _ = pooled_seed_spread(arms, key)
    if spread is not None:
        variance += spread**2 * (1 / len(a.values(key)) + 1 / len(b.values(key)))
    return Difference(mean_b - mean_a, math.sqrt(variance), spread is not None)


def noise_paragraph(arms: Sequence[Aggregate], key: str) -> str:
    """How far this budget can settle the question: the noise, and what a larger budget would change."""
    n = test_images(arms)
    runs = [a.first for a in arms if a.first.config is not None]
    if not runs or not n:
        return "No arm has been evaluated yet, so nothing can be said about the noise."
    cfg = runs[0].config
    assert cfg is not None  # runs holds the runs with a config
    steps = max(int(r.summary.get("steps", 0) or 0) for r in runs)
    epochs = max(float(r.summary.get("epochs", 0) or 0) for r in runs)
    mean = statistics.fmean(v for a in arms for v in a.values(key)) if any(a.values(key) for a in arms) else 0.5
    se = math.sqrt(mean * (1 - mean) / n)
    seeds = min(len(a.runs) for a in arms)
    plural = "s" if seeds != 1 else ""
    spread, dof = pooled_seed_spread(arms, key)
    seed_text = (
        f"the run-to-run spread over {seeds} seeds is {100 * spread:.1f} points (pooled, {dof} degrees of freedom)"
        if spread is not None
        else "the run-to-run spread is not measured (one seed per arm; `--ablation-seeds 0,1` measures it), and "
        "short runs can differ between seeds by more than the test-set error"
    )
    return (
        f"**How far this budget settles it.** Each arm trained {epochs:g} epoch{'s' if epochs != 1 else ''} "
        f"({steps} steps) of {cfg.backbone} at {cfg.augment.image_size or 'native'} px, batch {cfg.batch_size}, "
        f"{seeds} seed{plural}. "
        f"One accuracy near {100 * mean:.0f} % on {n} test images has a standard error of {100 * se:.1f} "
        f"points; {seed_text}. A difference is called settled at 2 σ or more. The papers measured these "
        "effects after 100 or more epochs on ImageNet; an answer here holds for this budget and may change "
        "with longer training."
    )


def _arm(arms: Sequence[Aggregate], **match: object) -> Aggregate | None:
    for arm in arms:
        overrides = dict(arm.first.spec.overrides)
        values = {k: overrides.get(k, _default(arm, k)) for k in match}
        if values == match:
            return arm
    return None


def _default(arm: Aggregate, key: str) -> object:
    cfg = arm.first.config
    return cfg.method_args.get(key) if cfg is not None else None


def answer_projector(arms: Sequence[Aggregate]) -> list[str]:
    mlp, linear, none = (_arm(arms, projector=p) for p in ("mlp", "linear", "none"))
    key = primary_key(arms)
    probe = "linear-probe" if key == PRIMARY else "kNN"
    out = []
    if mlp is None:
        return ["The MLP-head arm has not been evaluated yet."]
    heads = ", ".join(
        f"{name} {pct(arm.mean(key))}"
        for name, arm in (("MLP head", mlp), ("linear head", linear), ("no head", none))
        if arm is not None
    )
    text = f"**Removing the head.** {probe.capitalize()} top-1 of h: {heads}."
    for name, arm in (("no head", none), ("linear head", linear)):
        d = difference(mlp, arm, key, arms) if arm is not None else None
        if d is not None:
            text += f" {name.capitalize()} against the MLP head: {d.text()}."
    out.append(text)
    h_vs_z = []
    gaps = {}
    for name, arm in (("MLP head", mlp), ("linear head", linear)):
        if arm is None:
            continue
        z_key = key.replace("_h", "_z")
        mean_h, mean_z = arm.mean(key), arm.mean(z_key)
        if mean_h is None or mean_z is None:
            continue
        n = test_images(arms) or 1
        sigma = math.sqrt((mean_h * (1 - mean_h) + mean_z * (1 - mean_z)) / n)
        d = Difference(mean_h - mean_z, sigma, False)
        gaps[name] = d
        knn = arm.mean("knn_top1_h"), arm.mean("knn_top1_z")
        knn_text = f"; kNN h {pct(knn[0])} vs z {pct(knn[1])}" if None not in knn else ""
        h_vs_z.append(f"with the {name}, h {pct(mean_h)} vs z {pct(mean_z)}: h − z = {d.text()}{knn_text}")
    if h_vs_z:
        out.append(f"**h versus z ({probe}).** " + "; ".join(h_vs_z) + ". Without a head, z is h.")
    removal = difference(mlp, none, key, arms) if none is not None else None
    head_helps = removal is not None and removal.settled and removal.value < 0
    h_better = "MLP head" in gaps and gaps["MLP head"].settled and gaps["MLP head"].value > 0
    verdict = (
        "The measurements agree with the paper on both counts: the head improves h, and h is better than z."
        if head_helps and h_better
        else "The measurements agree with the paper that h is better than z, but do not show (at this "
        "budget) that removing the head hurts h."
        if h_better
        else "The measurements agree with the paper that removing the head hurts h, but do not show h "
        "better than z at this budget."
        if head_helps
        else "At this budget the measurements do not reproduce the paper's effects beyond the noise."
    )
    out.append(
        "**Why (SimCLR §4.2).** The contrastive loss is computed on z, so z is trained to be invariant "
        "to the augmentations and the head can discard information the loss does not need (colour, "
        "orientation, fine detail) but a downstream classifier does; h sits one non-linear layer before "
        "the loss and keeps more of it. Without a head, h itself must become invariant and loses that "
        f"information. {verdict}"
    )
    return out


def answer_loss(arms: Sequence[Aggregate]) -> list[str]:
    key = primary_key(arms)
    probe = "linear-probe" if key == PRIMARY else "kNN"
    names = {"nt_xent": "NT-Xent", "nt_logistic": "NT-Logistic", "margin_triplet": "margin triplet"}
    found = [(names[loss], arm) for loss in names if (arm := _arm(arms, loss=loss)) is not None]
    evaluated = [(n, a) for n, a in found if a.mean(key) is not None]
    if not evaluated:
        return ["No arm has been evaluated yet."]
    ranking = sorted(evaluated, key=lambda item: -(item[1].mean(key) or 0))
    text = (
        f"**Measured.** {probe.capitalize()} top-1 of h: "
        + ", ".join(f"{n} {pct(a.mean(key))}" for n, a in evaluated)
        + f". Best: {ranking[0][0]}."
    )
    base = dict(found).get("NT-Xent")
    if base is not None:
        for name, arm in evaluated:
            if arm is not base and (d := difference(base, arm, key, arms)) is not None:
                text += f" {name} against NT-Xent: {d.text()}."
    cfg = base.first.config if base is not None and base.first.config is not None else evaluated[0][1].first.config
    settings = ""
    if cfg is not None:
        args = cfg.method_args
        settings = (
            f" Here every loss shares the NT-Xent recipe (temperature {args.get('temperature')}, margin "
            f"{args.get('margin')} for the triplet loss), without the per-loss tuning and the semi-hard "
            "negative mining the paper gives NT-Logistic and the margin triplet loss, so the comparison "
            "favours NT-Xent."
        )
    return [
        text,
        "**The paper's answer (SimCLR §5.1, Table 2).** NT-Xent, with L2-normalised embeddings and a "
        "temperature, works best: its gradient weighs the negatives by their relative hardness, which "
        "the other two losses do not." + settings,
    ]


def answer_variance(arms: Sequence[Aggregate]) -> list[str]:
    key = primary_key(arms)
    probe = "linear-probe" if key == PRIMARY else "kNN"
    std, var = _arm(arms, variance_mode="std"), _arm(arms, variance_mode="var")
    if std is None or var is None or std.mean(key) is None or var.mean(key) is None:
        return ["Both arms (std and var) must be evaluated to answer."]
    d = difference(std, var, key, arms)
    collapse = (
        f"Collapse indicators on the test embeddings z: effective rank {std.mean('effective_rank_z') or 0:.1f}"
        f" (std) vs {var.mean('effective_rank_z') or 0:.1f} (var); embedding std "
        f"{std.mean('embedding_std_z') or 0:.4f} vs {var.mean('embedding_std_z') or 0:.4f} "
        f"(1/√d = {1 / math.sqrt(max(1, _latent(std))):.4f} for a spread-out embedding)."
    )
    return [
        f"**Measured.** {probe.capitalize()} top-1 of h: std {pct(std.mean(key))}, var {pct(var.mean(key))}; "
        f"var against std: {d.text() if d else 'n/a'}. {collapse}",
        "**Why the standard deviation.** The hinge max(0, γ − S(z_j)) acts only while a dimension's spread is "
        "below γ. With S = Var, the gradient with respect to a sample is proportional to (z_ij − z̄_j), which "
        "vanishes as the embeddings shrink towards their mean, so it pushes weakest exactly when collapse is "
        "near; with S = √(Var + ε) it is (z_ij − z̄_j)/√(Var + ε), independent of the scale. VICReg therefore "
        "uses the standard deviation (Eq. 1).",
    ]


def _latent(arm: Aggregate) -> int:
    cfg = arm.first.config
    if cfg is None:
        return 1
    expander = cfg.method_args.get("expander") or (cfg.method_args.get("latent_dim") or 1,)
    return int(expander[-1]) if isinstance(expander, (list, tuple)) else int(expander)


def answer_projector_bn(arms: Sequence[Aggregate]) -> list[str]:
    key = primary_key(arms)
    probe = "linear-probe" if key == PRIMARY else "kNN"
    found = {(hb, lb): _arm(arms, hidden_bn=hb, last_bn=lb) for hb in (True, False) for lb in (True, False)}
    cell = {k: a for k, a in found.items() if a is not None and a.mean(key) is not None}
    if len(cell) < len(found):
        return ["All four arms (hidden BN on/off x last BN on/off) must be evaluated to answer."]
    out = [
        f"**Measured.** {probe.capitalize()} top-1 of h: "
        + ", ".join(
            f"hidden BN {'on' if hb else 'off'} / last BN {'on' if lb else 'off'} "
            f"{pct(a.mean(key))} (z: {pct(a.mean(key.replace('_h', '_z')))})"
            for (hb, lb), a in cell.items()
        )
        + "."
    ]
    effects = []
    for name, on_off in (
        ("hidden BN", lambda lb: ((True, lb), (False, lb))),
        ("last BN (output standardisation)", lambda lb: ((lb, True), (lb, False))),
    ):
        parts = []
        for level in (True, False):
            on, off = on_off(level)
            d = difference(cell[off], cell[on], key, arms)  # on − off
            assert d is not None  # every arm has a mean for key
            other = "last BN" if name == "hidden BN" else "hidden BN"
            parts.append(f"with {other} {'on' if level else 'off'}: {d.text()}")
        effects.append(f"{name} on − off: " + "; ".join(parts))
    out.append("**Effects.** " + ". ".join(effects) + ".")
    out.append(
        "**Reading it.** BatchNorm in the head standardises each dimension over the batch; on the output "
        "it removes the per-dimension scale and offset before the L2 normalisation of the contrastive loss. "
        "SimCLR v1's head has both; the paper does not ablate them, so this is the measured answer for "
        "this budget only."
    )
    return out


ANSWERS = {
    "projector": answer_projector,
    "loss": answer_loss,
    "variance": answer_variance,
    "projector-bn": answer_projector_bn,
}
