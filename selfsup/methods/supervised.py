"""The supervised reference ceiling: the same backbone trained with labels (cross-entropy).

A linear classifier over the backbone features h is trained with cross-entropy on both augmented views of
every image (so a step costs the same two backbone passes as a two-view self-supervised method), with the
engine, view pipeline, optimizer, schedule, batch size and epochs of the runs it is compared with. This is
the "supervised baseline" row of the SSL papers (e.g. SimCLR Table 8 and Fig. 7: the same architecture
trained with labels), here under the comparison's budget instead of the papers' 90-epoch recipe.

It is a registered method that is not *listed*: ``selfsup methods`` and ``selfsup compare --methods all``
leave it out, and ``selfsup compare`` adds it as the baseline. It declares ``uses_labels``, so the engine
hands it the labels of each batch (images labelled ``-1``, STL-10's unlabeled split, are ignored by the loss)
and refuses to train it on unlabelled data. Its z is the class logits, so evaluation also reports the test
top-1 of its own classifier (``classifier_top1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.checks import Range, at_least
from selfsup.config import ConfigError
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone


@register_method
class Supervised(Method):
    """Backbone + linear classifier, trained with cross-entropy on every large view."""

    name = "supervised"
    summary = "the same backbone trained with labels (cross-entropy): the reference ceiling"
    paper = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (as the SSL papers' baseline)"
    listed = False
    uses_labels = True

    @dataclass
    class Args:
        num_classes: int = 10
        label_smoothing: float = 0.0

    ranges = {
        "num_classes": at_least(2),
        "label_smoothing": Range(0, 1, high_open=True),
    }

    presets = {"imagenet": {}, "small": {}, "cpu": {}}
    """Only the preset bases: the baseline shares the compared runs' optimizer budget, nothing else."""

    def __init__(self, backbone: Backbone, args: Any, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.num_classes < 2:
            raise ConfigError(f"num_classes={args.num_classes}: a classifier needs at least 2 classes")
        self.classifier = nn.Linear(backbone.out_dim, args.num_classes)

    @classmethod
    def latent_dim(cls, args: Any) -> int:
        return int(args.num_classes)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z is the class logits."""
        return self.classifier(h)

    def training_step(
        self, views: Sequence[torch.Tensor], progress: Progress, labels: torch.Tensor | None = None
    ) -> StepOutput:
        if labels is None:
            raise ValueError("the supervised baseline needs the labels of the batch")
        large = [v for v in views if v.shape == views[0].shape]
        logits = self.classifier(self.backbone(torch.cat(large))).float()
        y = labels.to(logits.device).long().repeat(len(large))
        labelled = (y >= 0).sum().clamp_min(1)
        loss = (
            F.cross_entropy(logits, y, ignore_index=-1, reduction="sum", label_smoothing=self.args.label_smoothing)
            / labelled
        )
        correct = ((logits.argmax(1) == y) & (y >= 0)).sum()
        return StepOutput(loss, {"train_top1": correct / labelled})
