"""The supervised reference ceiling of ``selfsup compare``: the same backbone trained with labels.

Cross-entropy on a linear classifier over the backbone features h, trained by the ordinary engine
(:class:`selfsup.engine.trainer.Trainer`) on the same view pipeline (both augmented views of every
image are classified, so a step costs the same two backbone passes as a two-view SSL method), with
the same optimizer, LR schedule, batch size and epochs as the compared runs. This is the usual
"supervised baseline" row of the SSL papers (e.g. SimCLR Table 8 and Fig. 7, trained on the same
architecture), here under the comparison's budget instead of the papers' 90-epoch recipe.

It is deliberately *not* a registered method: it needs labels, which the engine's methods never see,
and it must not appear in ``selfsup methods`` or in ``compare --methods all``. Two small pieces plug it
into the engine: :class:`SupervisedTrainer` overrides the trainer's ``build_method`` hook, and
:class:`LabelledPipeline` hands the method the labels of each batch (the pipelines yield dataset
indices with the views). Images labelled ``-1`` (STL-10's unlabeled split) are ignored by the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import ConfigError, TrainConfig, apply_overrides
from selfsup.data.pipeline import ViewBatch, ViewPipeline
from selfsup.engine.trainer import Trainer
from selfsup.methods.base import Method, Progress, StepOutput, embedding_std
from selfsup.models import build_backbone
from selfsup.presets import PRESET_BASES, check_preset, validate

NAME = "supervised"


class SupervisedBaseline(Method):
    """Backbone + linear classifier, trained with cross-entropy on both augmented views."""

    name = NAME
    summary = "the same backbone trained with labels (cross-entropy): the reference ceiling"
    paper = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (as the SSL papers' baseline)"

    @dataclass
    class Args:
        num_classes: int = 10
        label_smoothing: float = 0.0

    presets = {"imagenet": {}, "small": {}, "cpu": {}}
    """Only the preset bases: the baseline shares the compared runs' optimizer budget, nothing else."""

    def __init__(self, backbone: nn.Module, args: Any, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.num_classes < 2:
            raise ConfigError(f"num_classes={args.num_classes}: a classifier needs at least 2 classes")
        self.classifier = nn.Linear(backbone.out_dim, args.num_classes)
        self.targets: torch.Tensor | None = None

    @classmethod
    def latent_dim(cls, args: Any) -> int:
        return int(args.num_classes)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z is the class logits."""
        return self.classifier(h)

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        if self.targets is None:
            raise RuntimeError("the supervised baseline needs labels: train it with SupervisedTrainer")
        large = [v for v in views if v.shape == views[0].shape]
        h = self.backbone(torch.cat(large))
        logits = self.classifier(h).float()
        y = self.targets.to(logits.device).repeat(len(large))
        labelled = (y >= 0).sum().clamp_min(1)
        loss = F.cross_entropy(logits, y, ignore_index=-1, reduction="sum",
                               label_smoothing=self.args.label_smoothing) / labelled
        correct = ((logits.argmax(1) == y) & (y >= 0)).sum()
        return StepOutput(loss, {"train_top1": correct / labelled, "z_std": embedding_std(h)}, h)


def build_supervised(cfg: TrainConfig, channels: int, gather_distributed: bool = False) -> SupervisedBaseline:
    """The baseline for ``cfg`` on a fresh backbone (the signature of ``build_method``)."""
    args = SupervisedBaseline.make_args(cfg.method_args)
    backbone = build_backbone(cfg.backbone, cfg.stem, channels, cfg.zero_init_residual, cfg.norm)
    return SupervisedBaseline(backbone, args, gather_distributed=gather_distributed)


class LabelledPipeline:
    """Wraps a view pipeline: before each batch is handed out, ``method.targets`` = its labels."""

    def __init__(self, pipeline: ViewPipeline, labels: torch.Tensor, method: SupervisedBaseline) -> None:
        self.pipeline = pipeline
        self.labels = labels.long()
        self.method = method
        self.batch_size = pipeline.batch_size

    def __len__(self) -> int:
        return len(self.pipeline)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        for batch in self.pipeline.epoch(epoch, start_batch):
            self.method.targets = self.labels[batch.index.cpu()]
            yield batch


class SupervisedTrainer(Trainer):
    """The engine's :class:`Trainer`, training :class:`SupervisedBaseline` on the labelled images."""

    def build_method(self, channels: int) -> Method:
        return build_supervised(self.cfg, channels, gather_distributed=self.world > 1)

    def setup(self) -> None:
        super().setup()
        if not self.dataset.has_labels:
            raise ConfigError(f"the supervised baseline needs labels, and the {self.cfg.dataset} images have none")
        self.pipeline = LabelledPipeline(self.pipeline, self.dataset.labels, self.method)


def supervised_config(preset: str, num_classes: int, flags: dict[str, Any] | None = None,
                      sets: dict[str, Any] | None = None) -> TrainConfig:
    """The baseline's config: the preset base (backbone, optimizer, schedule ...), then the compared
    runs' flags (epochs, batch size, backbone ...) and the ``--set`` keys that apply to it."""
    check_preset(preset)
    cfg = TrainConfig(method=NAME, preset=preset)
    apply_overrides(cfg, {**PRESET_BASES[preset], **SupervisedBaseline.presets.get(preset, {})},
                    SupervisedBaseline.Args)
    apply_overrides(cfg, {k: v for k, v in (flags or {}).items() if v is not None}, SupervisedBaseline.Args)
    apply_overrides(cfg, sets or {}, SupervisedBaseline.Args)
    cfg.method_args = dataclasses.asdict(SupervisedBaseline.make_args({**cfg.method_args,
                                                                       "num_classes": num_classes}))
    validate(cfg)
    return cfg


@torch.no_grad()
def classifier_top1(run_dir: str | Path, device: str = "auto", max_test: int = 0) -> float:
    """Test top-1 of the baseline's own classifier head (un-augmented test images)."""
    from selfsup.data import load_dataset
    from selfsup.engine import runtime
    from selfsup.engine.trainer import monitor_subset
    from selfsup.evaluation.evaluate import load_run_config, load_trained_method
    from selfsup.evaluation.features import extract_features

    torch_device = runtime.resolve_device(device)
    cfg = load_run_config(run_dir)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir)
    test = monitor_subset(test, max_test) if max_test else test
    method, _ = load_trained_method(run_dir, torch_device, test.channels, build_supervised)
    size = int(cfg.augment.resolved(test.native_size).image_size)
    _, logits = extract_features(method.embed, test, size, torch_device)
    return float((logits.argmax(1) == test.labels).float().mean())
