"""The base class every method derives from, and the method registry.

A method is a small ``nn.Module`` composed of

* a backbone (``self.backbone``, images -> h),
* its heads (projector, predictor ... built with :func:`selfsup.models.mlp`),
* a loss from :mod:`selfsup.losses`,

and declares its hyperparameters (``Args``), its recipes (``presets``) and, when it needs them,
extra hooks. The training engine (:mod:`selfsup.engine.trainer`) is the same for every method:
it calls ``method(views, progress)`` (i.e. :meth:`Method.training_step`), back-propagates the
returned loss, steps the optimizer, then calls :meth:`Method.after_optimizer_step`.

Adding a method takes one file::

    @register_method
    class MyMethod(Method):
        name = "mymethod"
        summary = "one line for `selfsup methods`"

        @dataclass
        class Args:
            latent_dim: int = 128

        presets = {"imagenet": {...}, "small": {...}, "cpu": {...}}

        def __init__(self, backbone, args, gather_distributed=False): ...
        def training_step(self, views, progress) -> StepOutput: ...
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup import distributed as dist
from selfsup.checks import Range, check_finite
from selfsup.config import TrainConfig, coerce
from selfsup.models.backbones import Backbone
from selfsup.registry import Registry

CPU_LARS: dict[str, Any] = {"optimizer": "lars", "base_lr": 1.0, "weight_decay": 1e-5}
"""The ``cpu`` preset's optimizer for methods whose loss scale breaks the shared base's SGD (BYOL, VICReg,
Barlow Twins, TiCo): LARS's per-layer trust ratio makes the step independent of the loss scale
(measured in docs/cpu-preset.md, "Loss-scale-sensitive methods")."""


@dataclass(frozen=True)
class Progress:
    """Where training is: used by schedules that live inside methods (EMA momentum, freezing)."""

    step: int
    total_steps: int
    epoch: int
    steps_per_epoch: int

    @property
    def fraction(self) -> float:
        """Training progress in [0, 1]."""
        return min(1.0, self.step / max(1, self.total_steps))

    @property
    def epoch_fraction(self) -> float:
        """Fractional epoch, e.g. 2.5 half-way through the third epoch."""
        return self.step / max(1, self.steps_per_epoch)


@dataclass
class StepOutput:
    """What a training step returns to the engine.

    ``loss`` is back-propagated. ``logs`` are the method's own scalars, written to ``metrics.jsonl`` at
    logging steps. ``embedding`` is one view's embedding (the projector output, or the vector the loss
    compares); at logging steps the engine writes its collapse statistic,
    :func:`selfsup.evaluation.collapse.embedding_std`, as ``z_std``.
    """

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)
    embedding: torch.Tensor | None = None


class Method(nn.Module):
    """Base class of all self-supervised methods."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Args: ClassVar[type] = dataclasses.make_dataclass("Args", [])
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    variants: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    """Named versions of one method (MoCo v1/v2/v3): ``{variant: {preset: overrides}}``. The CLI name
    ``<name>-<variant>`` (e.g. ``moco-v3``) applies the variant's overrides on top of ``presets``."""
    ranges: ClassVar[dict[str, Range]] = {}
    """The values each setting of ``Args`` takes (:mod:`selfsup.checks`), checked before a run starts."""
    listed: ClassVar[bool] = True
    """Whether ``selfsup methods`` and ``compare --methods all`` show it (the supervised baseline is not)."""
    uses_labels: ClassVar[bool] = False
    """Whether :meth:`training_step` takes the batch's labels (third argument); the engine then passes them
    and refuses data without labels."""
    needs_stage_maps: ClassVar[str] = ""
    """Why the method needs a backbone's intermediate spatial maps (CPC, DIM, AMDIM), which selfsup's own
    encoders and ResNets give and ``timm:``/``tv:`` models do not; empty: any backbone (a global vector)."""

    def __init__(self, backbone: Backbone, args: Any, gather_distributed: bool = False) -> None:
        super().__init__()
        if self.needs_stage_maps and not backbone.has_stage_maps:
            raise ValueError(f"{self.name} cannot train this backbone: {self.needs_stage_maps}")
        self.backbone = backbone
        self.args = args
        self.gather_distributed = gather_distributed

    # ------------------------------------------------------------------ hooks for subclasses

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        """Compute the self-supervised loss for one batch of views (large views first)."""
        raise NotImplementedError

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The projector output z for backbone features h (used by evaluation).

        By default ``self.projector(h)``; methods whose head has another name or shape override it."""
        projector = getattr(self, "projector", None)
        if projector is None:
            raise NotImplementedError(f"{type(self).__name__} has no `projector`; override `project`")
        return projector(h)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups. Keys besides ``params``: ``lr_mult`` (multiplies the
        scheduled LR), ``fixed_lr`` (stay at the peak LR, e.g. SimSiam's predictor) and
        ``lr_mult_1d`` (LR multiplier for the biases and norm parameters of the group,
        e.g. Barlow Twins). Default: one group with every trainable parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def no_weight_decay_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters besides norms and biases that take no weight decay (nor LARS's adaptation): the
        backbone's :meth:`~selfsup.models.Backbone.no_weight_decay` (a ViT's position embedding and class
        token)."""
        names = {f"backbone.{name}" for name in self.backbone.no_weight_decay()}
        return [p for n, p in self.named_parameters() if n in names and p.requires_grad]

    def before_optimizer_step(self, progress: Progress) -> None:
        """Called after backward, before the optimizer step (e.g. freeze prototypes)."""

    def after_optimizer_step(self, progress: Progress) -> None:
        """Called after the optimizer step (e.g. EMA target updates)."""

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Extra non-tensor state to checkpoint. Tensor state belongs in buffers."""
        return {}

    def load_state_for_checkpoint(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_for_checkpoint` returned."""

    @classmethod
    def latent_dim(cls, args: Any) -> int:
        """The embedding (latent) dimension shown in the recipe table."""
        return int(args.latent_dim)

    @classmethod
    def num_views(cls, args: Any) -> int:
        """How many large views a training step expects (small multi-crop views come extra)."""
        return 2

    # ------------------------------------------------------------------ shared behaviour

    def forward(
        self, views: Sequence[torch.Tensor], progress: Progress, labels: torch.Tensor | None = None
    ) -> StepOutput:
        """The training step (so that DDP's forward hooks see it). ``labels`` reach only methods that
        declare ``uses_labels``."""
        if self.uses_labels:
            return self.training_step(views, progress, labels)  # type: ignore[call-arg]
        return self.training_step(views, progress)

    def global_rows(self, n: int) -> tuple[int, int]:
        """``(start, total)``: this rank's first row and the global batch size, for random draws that are
        made for the global batch and sliced ``[start: start + n]``, so that 1 and N processes draw the
        same numbers (DDP-equivalence; without ``gather_distributed``, ``(0, n)``)."""
        if not self.gather_distributed:
            return 0, n
        return dist.rank() * n, dist.world_size() * n

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features h and projector outputs z, for evaluation (call in eval mode)."""
        h = self.backbone(images)
        return h, self.project(h)

    @classmethod
    def check_args(cls, args: Any) -> None:
        """Raise :class:`~selfsup.config.ConfigError` for a setting outside its range (every float must be
        finite). Methods with constraints between settings extend this."""
        for f in dataclasses.fields(args):
            value = getattr(args, f.name)
            check_finite(f.name, value)
            if f.name in cls.ranges:
                cls.ranges[f.name].check(f.name, value)

    @classmethod
    def check_config(cls, args: Any, cfg: TrainConfig) -> None:
        """Constraints between the method's settings and the run's (batch size, views ...), checked before a
        run starts; the default has none."""

    @classmethod
    def make_args(cls, values: dict[str, Any]) -> Any:
        """Build ``cls.Args`` from a dict, with a clear error for unknown keys."""
        names = [f.name for f in dataclasses.fields(cls.Args)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.name} settings {unknown}. Valid: {', '.join(names)}")
        hints = typing.get_type_hints(cls.Args)
        return cls.Args(**{k: coerce(v, hints[k], k) for k, v in values.items()})


METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register a :class:`Method` subclass under ``cls.name``.

    A setting of the method's ``Args`` may not share its name with a run setting (a field of
    :class:`~selfsup.config.TrainConfig`): ``--set NAME=...`` could not say which one it means."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    run_settings = {f.name for f in dataclasses.fields(TrainConfig)}
    clashes = sorted(run_settings & {f.name for f in dataclasses.fields(cls.Args)})
    if clashes:
        raise ValueError(
            f"{cls.__name__}.Args has settings named like run settings: {', '.join(clashes)}; "
            "rename them (e.g. with the method's name as a prefix)"
        )
    return METHODS.register(cls.name)(cls)


def cosine_increase(base: float, progress: float, final: float = 1.0) -> float:
    """BYOL's momentum schedule: τ = final − (final − base)·(cos(π·progress) + 1)/2 (BYOL §3.2)."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
