"""The comparison report: one document, written as ``report.md`` and as a self-contained ``report.html``.

The document is a list of blocks (headings, paragraphs, tables, figures) built once from the run
results (:func:`build_document`) and rendered twice: Markdown links the figures as files under
``plots/``; HTML embeds them as ``data:image/png;base64`` URIs and carries its own CSS, so the file
can be mailed or archived alone (no external resource of any kind).

The results table holds, per run, the recipe columns of ``selfsup methods`` from the run's resolved config (latent
dim, batch, optimizer, LR, weight decay, schedule, epochs) and the measured columns: kNN and
linear-probe top-1 on h and z, wall time, images/s and peak memory (``summary.json``), the embedding
std and effective rank of the test embeddings z (``eval.json``). Below the methods come the baselines:
the supervised ceiling, the random-init encoder, raw and standardised pixels.
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.checkpoint import atomic_write_text
from selfsup.compare import analysis, plots
from selfsup.compare.plan import ABLATIONS, Plan, format_value
from selfsup.compare.results import Aggregate, RunResult, aggregate
from selfsup.config import TrainConfig
from selfsup.methods import split_variant
from selfsup.presets import OPTIMIZER_NAMES, schedule_text

COLUMNS = (
    "run",
    "latent dim",
    "batch",
    "optimizer",
    "LR",
    "WD",
    "schedule",
    "epochs",
    "kNN h",
    "kNN z",
    "linear h",
    "linear z",
    "wall time",
    "images/s",
    "peak mem",
    "z std",
    "eff. rank z",
)


@dataclass
class Document:
    """Blocks: ``("h", level, text)``, ``("p", text)``, ``("table", header, rows)``, ``("img", name, png, caption)``."""

    title: str
    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, name: str, png: bytes | None, caption: str) -> None:
        if png is not None:
            self.blocks.append(("img", name, png, caption))


# ----------------------------------------------------------------------------- cells


def _pct(agg: Aggregate, key: str) -> str:
    mean = agg.mean(key)
    if mean is None:
        return "–"
    spread = agg.spread(key)
    return f"{100 * mean:.2f}" + (f" ± {100 * spread:.2f}" if spread is not None else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def latent_dim(cfg: TrainConfig) -> int | str:
    try:
        cls, _ = split_variant(cfg.method)
        return cls.latent_dim(cls.make_args(cfg.method_args))
    except Exception:  # a method removed since the run: show what we can
        return "?"


def recipe_cells(cfg: TrainConfig | None, result: RunResult | None = None) -> list[str]:
    """latent dim, batch, optimizer, LR, WD, schedule, epochs (as :func:`selfsup.presets.recipe_row`)."""
    if cfg is None:
        return ["–"] * 7
    epochs = f"{cfg.epochs}"
    done = result.summary.get("epochs") if result is not None else None
    if isinstance(done, (int, float)) and done < cfg.epochs - 1e-9:
        epochs = f"{done:.3g} of {cfg.epochs}"
    optimizer = OPTIMIZER_NAMES.get(cfg.optimizer, cfg.optimizer)
    return [
        str(latent_dim(cfg)),
        str(cfg.batch_size),
        optimizer,
        f"{cfg.lr:.4g}",
        f"{cfg.weight_decay:g}",
        schedule_text(cfg),
        epochs,
    ]


def measured_cells(agg: Aggregate) -> list[str]:
    memory = agg.mean("peak_gpu_mib")
    memory_text = (
        f"{memory:.0f} MiB (GPU)"
        if memory is not None
        else (f"{agg.mean('peak_rss_mib'):.0f} MiB" if agg.mean("peak_rss_mib") is not None else "–")
    )
    rank = agg.mean("effective_rank_z")
    std = agg.mean("embedding_std_z")
    images = agg.mean("images_per_s")
    return [
        _pct(agg, "knn_top1_h"),
        _pct(agg, "knn_top1_z"),
        _pct(agg, "linear_top1_h"),
        _pct(agg, "linear_top1_z"),
        _duration(agg.mean("wall_time_s")),
        f"{images:.0f}" if images is not None else "–",
        memory_text,
        f"{std:.4f}" if std is not None else "–",
        f"{rank:.1f}" if rank is not None else "–",
    ]


def run_row(agg: Aggregate) -> list[str]:
    label = agg.label + ("" if agg.first.state == "finished" else f" ({agg.first.state})")
    if len(agg.runs) > 1:
        label += f" [{len(agg.runs)} seeds]"
    return [label, *recipe_cells(agg.first.config, agg.first), *measured_cells(agg)]


def baseline_rows(results: list[RunResult]) -> list[list[str]]:
    """One random-init row per architecture that was evaluated, then raw and standardized pixels."""
    with_baselines = [r for r in results if "raw_pixels_knn_top1" in r.evaluation]
    if not with_baselines:
        return []

    def cell(e: dict[str, Any], key: str) -> str:
        value = e.get(key)
        return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "–"

    dash = ["–"] * 7
    tail = ["–"] * 6
    rows, seen = [], set()
    for result in with_baselines:
        e = result.evaluation
        arch = f"{e.get('backbone', '?')}, seed {result.config.seed if result.config else '?'}"
        if "random_init_knn_top1" in e and arch not in seen:
            seen.add(arch)
            rows.append(
                [
                    f"random-init encoder ({arch})",
                    *dash,
                    cell(e, "random_init_knn_top1"),
                    "–",
                    cell(e, "random_init_linear_top1"),
                    *tail,
                ]
            )
    e = with_baselines[0].evaluation
    rows.append(
        [
            "raw pixels (values in [0, 1])",
            *dash,
            cell(e, "raw_pixels_knn_top1"),
            "–",
            cell(e, "raw_pixels_linear_top1"),
            *tail,
        ]
    )
    rows.append(["standardized pixels", *dash, cell(e, "standardized_pixels_knn_top1"), "–", "–", *tail])
    return rows


def _backbones(results: list[RunResult]) -> str:
    """The backbone of most runs (with its stem, which only a ResNet has), and the runs that use another."""
    configs = [(r.spec.name, r.config) for r in results if r.config is not None]
    common = Counter(cfg.backbone for _, cfg in configs).most_common(1)[0][0]
    stem = next(cfg.stem for _, cfg in configs if cfg.backbone == common)
    others = [f"{name} ({cfg.backbone})" for name, cfg in configs if cfg.backbone != common]
    text = f"Backbone {common}" + (f" ({stem} stem)" if common.startswith("resnet") else "")
    return text + (f", except {', '.join(others)}" if others else "")


# ----------------------------------------------------------------------------- the document


def _context(results: list[RunResult], opts: Any) -> str:
    evaluated = next((r for r in results if r.evaluation), None)
    cfg = next((r.config for r in results if r.config is not None), None)
    parts = [f"Dataset **{opts.dataset}**, preset **{opts.preset}**."]
    if cfg is not None:
        parts.append(
            f"{_backbones(results)}; at {cfg.augment.image_size or 'native'} px; "
            f"device {next((r.summary.get('device') for r in results if r.summary), cfg.device)}."
        )
    if evaluated is not None:
        e = evaluated.evaluation
        parts.append(
            f"Evaluation on frozen features of un-augmented images: kNN (k = 200, T = 0.1, cosine, "
            f"weighted vote) and a linear probe, trained on {e.get('train_images')} labelled training "
            f"images and measured on {e.get('test_images')} test images (top-1, %)."
        )
    return " ".join(parts)


def build_document(plan: Plan, results: list[RunResult], opts: Any) -> Document:
    by_name = {r.spec.name: r for r in results}
    doc = Document(f"selfsup compare: {opts.dataset}, {opts.preset} preset")
    doc.paragraph(_context(results, opts))
    if getattr(opts, "command", ""):
        doc.paragraph(f"Command: `{opts.command}`")

    doc.heading(2, "Results")
    main_keys = {s.key for s in plan.methods}
    main = aggregate([r for r in results if r.spec.key in main_keys])  # with the ablations' extra seeds
    supervised = aggregate([by_name[s.name] for s in plan.supervised])
    rows = [run_row(a) for a in main] + [run_row(a) for a in supervised] + baseline_rows(results)
    doc.table(list(COLUMNS), rows)
    notes = [
        "Recipe columns come from each run's resolved config; LR is the peak learning rate after batch "
        "scaling. kNN and linear: top-1 (%) on the backbone features h and the projector outputs z; "
        '"± x" is the standard deviation over seeds when several were run.',
        "Wall time, images/s and peak memory come from `summary.json` (peak resident memory of the "
        "training process, or peak GPU memory); z std is the std of the L2-normalised test embeddings z "
        "(about 1/√d when spread out, near 0 when collapsed) and eff. rank z their effective rank.",
    ]
    if not getattr(opts, "isolate", True):
        notes.append(
            "These runs were trained in one process (`--in-process`): the peak memory of a run is the "
            "maximum over the runs trained before it in that process, not its own."
        )
    for agg in supervised:
        top1 = agg.mean("classifier_top1")
        if top1 is not None:
            notes.append(
                f"The supervised baseline trains the same backbone with cross-entropy on both augmented "
                f"views, with the compared runs' optimizer, schedule and epochs; its own classifier "
                f"reaches {100 * top1:.2f} % test top-1 (z is its logits)."
            )
    doc.paragraph(" ".join(notes))

    shown = [a.first for a in main + supervised]
    doc.heading(2, "Training")
    doc.image("loss_curves", plots.loss_curves(shown), "Training loss per run (each panel has its own scale).")
    doc.image(
        "knn_curves",
        plots.knn_curves(shown),
        "kNN top-1 of h during training (the engine's monitor, on a held-out subset).",
    )
    doc.heading(2, "Collapse and embeddings")
    doc.image(
        "spectra",
        plots.spectra(shown),
        "Singular values of the centred test embeddings, normalised by the largest, log scale. A curve that "
        "falls to ~0 after a few dimensions means (dimensional) collapse.",
    )
    doc.image(
        "embedding_maps",
        plots.embedding_maps(shown),
        "Test embeddings h projected on their first two principal components (PCA), coloured by class.",
    )

    for name, arms in plan.ablations.items():
        ablation = ABLATIONS[name]
        arm_aggs = [Aggregate([by_name[s.name] for s in arm]) for arm in arms]
        doc.heading(2, f"Ablation `{name}`: {ablation.question}")
        doc.paragraph(f"{ablation.method}, one run per arm and seed; the question comes from {ablation.source}.")
        labels = [", ".join(f"{k}={format_value(v)}" for k, v in arm.items()) for arm in ablation.arms]
        doc.table(
            ["arm", "run", "kNN h", "kNN z", "linear h", "linear z", "z std", "eff. rank z", "state"],
            [
                [label, a.first.spec.name, *measured_cells(a)[:4], *measured_cells(a)[7:], a.first.state]
                for label, a in zip(labels, arm_aggs)
            ],
        )
        for text in analysis.ANSWERS[name](arm_aggs):
            doc.paragraph(text)
        doc.paragraph(analysis.noise_paragraph(arm_aggs, analysis.primary_key(arm_aggs)))
        doc.image(
            f"ablation_{name}",
            plots.ablation_bars(arm_aggs, labels, f"{name}: top-1 by arm"),
            f"Top-1 per arm of the `{name}` ablation (error bars: std over seeds, when measured).",
        )
    return doc


# ----------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, image_dir: str = "plots") -> str:
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[3]}]({image_dir}/{block[1]}.png)", "", f"*{block[3]}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    """Escape, then render the Markdown subset used in paragraphs: **bold** and `code`."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; white-space: normal; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } code { background: #f3f3f3; padding: 0 0.2em; }
.wide { overflow-x: auto; }
"""


def to_html(doc: Document) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            header = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            table = f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
            parts.append(f'<div class="wide">{table}</div>')
        elif kind == "img":
            data = base64.b64encode(block[2]).decode("ascii")
            parts.append(
                f'<figure id="{html.escape(block[1])}"><img alt="{html.escape(block[3])}" '
                f'src="data:image/png;base64,{data}"><figcaption>{_inline(block[3])}</figcaption></figure>'
            )
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_report(plan: Plan, results: list[RunResult], opts: Any, report_dir: Path) -> Document:
    """Write ``report.md`` (with ``plots/*.png``) and the self-contained ``report.html`` to ``report_dir``."""
    doc = build_document(plan, results, opts)
    report_dir.mkdir(parents=True, exist_ok=True)
    image_dir = report_dir / "plots"
    image_dir.mkdir(exist_ok=True)
    for block in doc.blocks:
        if block[0] == "img":
            (image_dir / f"{block[1]}.png").write_bytes(block[2])
    atomic_write_text(to_markdown(doc), report_dir / "report.md")
    atomic_write_text(to_html(doc), report_dir / "report.html")
    return doc
