"""Encoders ready for reuse: export the backbone for plain timm or torchvision, and embed a folder of images.

* :func:`export_backbone` writes the backbone's weights as a plain state dict (``backbone.net.`` prefix
  stripped) in PyTorch's format (``torch.save``, ``.pt``: ``--format torchvision`` or ``timm``) or as
  ``.safetensors``. The state dict loads with ``strict=True``, without selfsup, into the library's own
  constructor: for ResNets ``torchvision.models.resnet18()`` (resnet34/50, or torchvision's
  ``ResNet(BasicBlock, [1, 1, 1, 1])`` for resnet10) once its stem matches the run's (``conv1`` for the input
  channels and stem, ``maxpool`` = Identity for the CIFAR stem) and ``fc`` = Identity; for ``timm:NAME``
  ``timm.create_model(NAME, num_classes=0, ...)`` with the run's image size, patch size and input channels;
  for ``tv:NAME`` ``torchvision.models.get_model(NAME)`` with its classifier replaced by Identity. A model
  card (Markdown) is written next to it: method, recipe, data, evaluation results (when ``eval.json``
  exists) and the code that builds the model and loads the weights.
* :func:`embed_folder` computes the backbone features h (or the projector outputs z) of every image
  under a folder, with the run's image size and normalisation, and writes them to ``.npy`` (rows in
  the order of ``<out>.paths.txt``) or ``.parquet`` (a ``path`` column and an ``embedding`` column).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from selfsup.config import TrainConfig
from selfsup.data import BadImageLog, read_images
from selfsup.models import is_library_name
from selfsup.run_folder import CHECKPOINTS, EVALUATION, SUMMARY, RunFolder

FORMATS = ("torchvision", "timm", "safetensors")
SUFFIX = {"torchvision": ".pt", "timm": ".pt", "safetensors": ".safetensors"}
PREFIX = "backbone.net."
TORCHVISION_FACTORIES = {"resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50"}


class ExportError(ValueError):
    """The run cannot be exported or embedded as asked; the message says why."""


def backbone_state_dict(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The backbone's weights from the run's last checkpoint, keys as in a torchvision ResNet."""
    state = RunFolder(run_dir).read_checkpoint()["method"]
    weights = {
        k[len(PREFIX) :]: v.detach().cpu().contiguous().clone() for k, v in state.items() if k.startswith(PREFIX)
    }
    if not weights:
        raise ExportError(
            f"the checkpoint of {run_dir} has no '{PREFIX}*' weights: only ResNets and timm/torchvision models "
            "can be exported"
        )
    return weights


# ----------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """What an image must go through before the backbone: size, channels and normalisation."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def run_preprocessing(cfg: TrainConfig) -> Preprocessing:
    """The run's evaluation preprocessing, from its dataset (statistics) and config (image size)."""
    from selfsup.data import DatasetNotFoundError, run_dataset

    try:
        try:
            dataset = run_dataset(cfg, "test")
        except DatasetNotFoundError:  # e.g. an image folder too small to hold a test split out
            dataset = run_dataset(cfg, "pretrain")
    except Exception as err:  # any failure: say what is missing
        raise ExportError(
            f"the run's dataset {cfg.dataset!r} is needed for its normalisation statistics and "
            f"image size, and could not be loaded: {err}"
        ) from err
    size = int(cfg.augment.image_size or dataset.native_size)
    return Preprocessing(size, dataset.channels, tuple(dataset.mean), tuple(dataset.std))


# ----------------------------------------------------------------------------- export


def construction_code(cfg: TrainConfig, channels: int) -> tuple[list[str], list[str], int]:
    """(imports, lines, width of h) that build the run's backbone as a plain library model named ``net``, without
    selfsup."""
    if is_library_name(cfg.backbone):
        from selfsup.methods.build import library_options
        from selfsup.models.library import build_library_backbone

        backbone = build_library_backbone(cfg.backbone, channels, library_options(cfg))
        return list(backbone.construction.imports), list(backbone.construction.lines), backbone.out_dim
    width = 64  # conv1's output channels in every torchvision ResNet
    imports = ["import torch", "import torchvision", "from torch import nn"]
    norm = {"group": "lambda c: nn.GroupNorm(min(32, c), c)", "layer": "lambda c: nn.GroupNorm(1, c)"}
    norm_arg = f"norm_layer={norm[cfg.norm]}" if cfg.norm in norm else ""
    if cfg.backbone == "resnet10":
        imports.append("from torchvision.models.resnet import BasicBlock, ResNet")
        body = [f"net = ResNet(BasicBlock, [1, 1, 1, 1]{', ' + norm_arg if norm_arg else ''})"]
    elif cfg.backbone in TORCHVISION_FACTORIES:
        body = [f"net = torchvision.models.{TORCHVISION_FACTORIES[cfg.backbone]}({norm_arg})"]
    else:
        raise ExportError(f"no torchvision equivalent is known for backbone {cfg.backbone!r}")
    if cfg.stem == "cifar":
        body += [
            f"net.conv1 = nn.Conv2d({channels}, {width}, kernel_size=3, stride=1, padding=1, bias=False)",
            "net.maxpool = nn.Identity()",
        ]
    elif channels != 3:
        body.append(f"net.conv1 = nn.Conv2d({channels}, {width}, kernel_size=7, stride=2, padding=3, bias=False)")
    body.append("net.fc = nn.Identity()")
    return imports, body, 2048 if cfg.backbone == "resnet50" else 512


def loading_snippet(cfg: TrainConfig, channels: int, filename: str, fmt: str, prep: Preprocessing | None = None) -> str:
    """Python code that builds the run's backbone in plain timm or torchvision and loads ``filename``, without
    selfsup (and, given ``prep``, a ``preprocess(image)`` function with the run's size and normalisation)."""
    imports, body, out_dim = construction_code(cfg, channels)
    if "import torch" not in imports:
        imports.insert(0, "import torch")
    if fmt == "safetensors":
        imports.append("from safetensors.torch import load_file")
        body.append(f'net.load_state_dict(load_file("{filename}"))')
    else:
        body.append(f'net.load_state_dict(torch.load("{filename}", weights_only=True))')
    body.append(f"net.eval()  # net(images) -> features h of shape (B, {out_dim})")
    if prep is not None:
        size, mode = prep.image_size, "L" if prep.channels == 1 else "RGB"
        imports.append("from torchvision.transforms import v2")
        body += [
            "",
            "",
            "def preprocess(image):",
            f'    """PIL image -> normalised ({prep.channels}, {size}, {size}) tensor, as selfsup does."""',
            f'    image = image.convert("{mode}")',
            f"    if image.size != ({size}, {size}):  # larger images: short side to {size}/0.875, centre crop",
            f"        side = round({size} / 0.875) if min(image.size) > {size} else {size}",
            f"        image = v2.CenterCrop({size})(v2.Resize(side)(image))",
            "    x = v2.ToDtype(torch.float32, scale=True)(v2.ToImage()(image))",
            f"    return v2.Normalize(mean={list(prep.mean)}, std={list(prep.std)})(x)",
            "",
            "",
            "# with torch.no_grad(): features = net(torch.stack([preprocess(img) for img in images]))",
        ]
    return "\n".join([*imports, "", *body])


def library_of(cfg: TrainConfig) -> str:
    """The library whose plain model the run's backbone is: ``timm`` or ``torchvision`` (registered ResNets are
    torchvision ResNets); raises :class:`ExportError` for the papers' own encoders, which have no library."""
    if is_library_name(cfg.backbone):
        return "timm" if cfg.backbone.lower().startswith("timm:") else "torchvision"
    if cfg.backbone in ("resnet10", *TORCHVISION_FACTORIES):
        return "torchvision"
    raise ExportError(
        f"the run's backbone {cfg.backbone!r} is one of the papers' own encoders, which no library builds; "
        "ResNets and timm:/tv: models can be exported"
    )


def _fmt_results(evaluation: dict[str, Any]) -> list[str]:
    rows = [
        ("trained encoder, h (backbone)", "knn_top1_h", "linear_top1_h"),
        ("trained encoder, z (projector)", "knn_top1_z", "linear_top1_z"),
        ("random-init encoder, h", "random_init_knn_top1", "random_init_linear_top1"),
        ("raw pixels", "raw_pixels_knn_top1", "raw_pixels_linear_top1"),
    ]

    def cell(key: str) -> str:
        value = evaluation.get(key)
        return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "–"

    lines = ["| features | kNN top-1 (%) | linear top-1 (%) |", "|---|---|---|"]
    lines += [f"| {label} | {cell(k)} | {cell(l)} |" for label, k, l in rows if cell(k) != "–" or cell(l) != "–"]
    lines.append("")
    lines.append(
        f"On {evaluation.get('test_images')} test images of {evaluation.get('dataset')} "
        f"({evaluation.get('train_images')} labelled training images for kNN and the linear probe)."
    )
    return lines


def model_card(
    run_dir: Path,
    cfg: TrainConfig,
    weights: dict[str, torch.Tensor],
    export_path: Path,
    fmt: str,
    prep: Preprocessing | None,
) -> str:
    """The Markdown model card written next to an export."""
    from selfsup.presets import schedule_text

    folder = RunFolder(run_dir)
    summary, evaluation = folder.read_summary(), folder.read_evaluation()
    from selfsup.methods import METHODS

    paper = METHODS.get(cfg.method).paper if cfg.method in METHODS else ""
    channels = prep.channels if prep is not None else _input_channels(weights)
    params = sum(int(t.numel()) for k, t in weights.items() if "running_" not in k and "num_batches" not in k)
    library = library_of(cfg)
    trained = summary.get("epochs")
    lines = [
        f"# {cfg.backbone} encoder pretrained with {cfg.method} on {cfg.dataset}",
        "",
        f"Exported by `selfsup export` from `{run_dir}` as `{export_path.name}` ({fmt}): the backbone only "
        f"(the projector and any momentum copies are dropped), {len(weights)} tensors, {params:,} parameters.",
        "",
        "## Method",
        "",
        f"- method: **{cfg.method}**" + (f" ({paper})" if paper else ""),
        f"- settings: `{json.dumps(cfg.method_args, sort_keys=True)}`",
        "",
        "## Recipe",
        "",
        f"- backbone: {_backbone_text(cfg)}, {channels} input channel(s)",
        f"- epochs: {cfg.epochs}" + (f" (trained {trained:g})" if isinstance(trained, (int, float)) else ""),
        f"- batch size: {cfg.batch_size}; optimizer: {cfg.optimizer}, peak LR {cfg.lr:.4g} "
        f"(base {cfg.base_lr:g}, {cfg.lr_scaling} scaling), weight decay {cfg.weight_decay:g}",
        f"- schedule: {schedule_text(cfg)}, warmup {cfg.warmup_epochs:g} epochs; seed {cfg.seed}",
        f"- augmentation: crop scale {cfg.augment.crop_scale}, blur {cfg.augment.blur_prob}, solarize "
        f"{cfg.augment.solarize_prob}, {cfg.augment.num_views} views",
        "",
        "## Data",
        "",
        f"- dataset: {cfg.dataset}" + (f" (subset of {cfg.train_subset} images)" if cfg.train_subset else ""),
    ]
    if prep is not None:
        lines.append(
            f"- input: {prep.image_size} x {prep.image_size} px, {prep.channels} channel(s), values in "
            f"[0, 1] normalised with mean {list(prep.mean)} and std {list(prep.std)}"
        )
    lines += ["", "## Evaluation", ""]
    lines += (
        _fmt_results(evaluation)
        if evaluation
        else [f"No `eval.json` in the run folder: run `selfsup eval {run_dir}` and export again to include results."]
    )
    lines += [
        "",
        f"## Load it with plain {library}",
        "",
        "```python",
        loading_snippet(cfg, channels, export_path.name, fmt, prep),
    ]
    lines += ["```", ""]
    return "\n".join(lines)


def _backbone_text(cfg: TrainConfig) -> str:
    """The backbone line of the model card: the ResNet's stem and norm, or the library model's options."""
    if not is_library_name(cfg.backbone):
        return f"{cfg.backbone}, {cfg.stem} stem, {cfg.norm} norm"
    extras = [f"patch {cfg.backbone_patch_size}" if cfg.backbone_patch_size else "", *cfg.backbone_args]
    extras += ["frozen random patch projection" if cfg.freeze_patch_embed else ""]
    extras += ["fixed sin-cos position embedding" if cfg.pos_embed == "sincos" else ""]
    return ", ".join([cfg.backbone, *[e for e in extras if e]])


def _input_channels(weights: dict[str, torch.Tensor]) -> int:
    """The input channels of the first 4-D weight (the first convolution or patch projection)."""
    first = next((t for t in weights.values() if t.ndim == 4), None)
    return int(first.shape[1]) if first is not None else 3


def check_output(path: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write ``path`` where it would destroy something: inside a run's ``checkpoints/`` folder, over
    one of ``inputs`` (the run's files, the images being embedded), or over an existing file unless ``force``."""
    target = path.resolve()
    if path.parent.name == CHECKPOINTS and RunFolder(path.parent.parent).is_run():
        raise ExportError(f"refusing to write {path}: it is inside the checkpoints folder of a run")
    for source in inputs:
        if source.exists() and target == source.resolve():
            raise ExportError(f"refusing to write {path}: it is one of the inputs ({source})")
    if path.exists() and not force:
        raise ExportError(f"{path} exists; nothing was written (use --force to replace it)")


def run_files(run_dir: Path) -> list[Path]:
    """The files of a run folder that export and embed read (and must never overwrite)."""
    folder = RunFolder(run_dir)
    return [folder.checkpoint_path, folder.config_path, folder.file(SUMMARY), folder.file(EVALUATION)]


def export_backbone(
    run_dir: str | Path, fmt: str | None = None, out: str | Path | None = None, force: bool = False
) -> Path:
    """Write the backbone's state dict and, next to it, the model card ``<name>.md``; returns the export's
    path. ``out`` must end in the format's suffix (so the card never lands on the weights), must not be inside
    a run's ``checkpoints/`` or equal to one of the run's files, and replaces an existing file only with
    ``force``; all of this is checked before anything is written. ``fmt`` None: the backbone's library."""
    if fmt is not None and fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}. Valid: {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    cfg = RunFolder(run_dir).read_config()
    library = library_of(cfg)
    fmt = fmt or library
    if fmt in ("timm", "torchvision") and fmt != library:
        raise ExportError(
            f"the run's backbone {cfg.backbone!r} is a {library} model: export it with --format {library} or "
            "--format safetensors"
        )
    stem = cfg.backbone.replace(":", "-").replace("/", "-")
    path = Path(out) if out else RunFolder(run_dir).export_dir / f"{stem}-{cfg.method}{SUFFIX[fmt]}"
    if path.suffix != SUFFIX[fmt]:
        raise ExportError(f"--out must end in {SUFFIX[fmt]} for the {fmt} format, got {path.name!r}")
    card = path.with_suffix(".md")
    for target in (path, card):
        check_output(target, run_files(run_dir), force)
    weights = backbone_state_dict(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(weights, str(path), metadata={"format": "pt", "method": cfg.method, "backbone": cfg.backbone})
    else:
        torch.save(weights, path)
    try:
        prep: Preprocessing | None = run_preprocessing(cfg)
    except ExportError:
        prep = None
    card.write_text(model_card(run_dir, cfg, weights, path, fmt, prep))
    return path


# ----------------------------------------------------------------------------- embed

OUTPUT_SUFFIXES = (".npy", ".parquet")


def embed_folder(
    run_dir: str | Path,
    images: str | Path,
    out: str | Path,
    features: str = "h",
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
) -> tuple[Path, int, int]:
    """Embed every readable image under ``images`` with the run's encoder; returns (path, images, dimension).
    Unreadable files are skipped with a warning naming each (more than 1 % fail the call); the outputs are
    checked like :func:`export_backbone`'s before anything is computed."""
    from selfsup import runtime
    from selfsup.augment import eval_transform
    from selfsup.data.imagefolder import list_images
    from selfsup.evaluation.evaluate import load_trained_method

    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ExportError(f"--out must end in {' or '.join(OUTPUT_SUFFIXES)}, got {out.name!r}")
    if features not in ("h", "z"):
        raise ExportError(f"features must be h or z, got {features!r}")
    if batch_size < 1:
        raise ExportError(f"--batch-size must be at least 1, got {batch_size}")
    root = Path(images)
    files = [root] if root.is_file() else list_images(root) if root.is_dir() else []
    if not files:
        raise ExportError(f"no images found under {root}")
    outputs = [out] + ([Path(str(out) + ".paths.txt")] if out.suffix == ".npy" else [])
    for target in outputs:
        check_output(target, run_files(Path(run_dir)) + files, force)
    cfg = RunFolder(run_dir).read_config()
    prep = run_preprocessing(cfg)
    torch_device = runtime.resolve_device(device)
    method, _ = load_trained_method(run_dir, torch_device, prep.channels)
    transform = eval_transform(prep.image_size, prep.channels, prep.mean, prep.std)
    mode = "L" if prep.channels == 1 else "RGB"

    def encode(x: torch.Tensor) -> torch.Tensor:
        h = method.backbone(x)
        return h if features == "h" else method.project(h)

    chunks: list[np.ndarray] = []
    embedded: list[Path] = []
    log = BadImageLog(len(files), max_fraction=cfg.max_bad_fraction, what="images to embed")
    with tqdm(total=len(files), desc=f"embed ({features})", unit="img", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            pictures, kept = read_images(chunk, mode, log)
            bar.update(len(chunk))
            if not pictures:
                continue
            batch = torch.stack([transform(picture) for picture in pictures])
            with torch.no_grad():
                chunks.append(encode(batch.to(torch_device)).float().cpu().numpy())
            embedded += [Path(p) for p in kept]
    if not chunks:
        raise ExportError(f"none of the {len(files)} images under {root} can be read")
    array = np.concatenate(chunks).astype(np.float32)
    paths = [str(p.relative_to(root)) if root.is_dir() else p.name for p in embedded]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, array)
        Path(str(out) + ".paths.txt").write_text("".join(p + "\n" for p in paths))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1), type=pa.float32()), array.shape[1])
        pq.write_table(pa.table({"path": pa.array(paths, type=pa.string()), "embedding": column}), out)
    return out, array.shape[0], array.shape[1]
