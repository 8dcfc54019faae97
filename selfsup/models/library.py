"""Backbones from the model libraries, by name: ``timm:NAME`` (any timm model) and ``tv:NAME`` (any torchvision
classification model).

``build_library_backbone("timm:vit_tiny_patch16_224", in_channels=1, options=LibraryOptions(image_size=32))``
returns a :class:`LibraryBackbone` whose ``net`` is the library's own model, built without pretrained weights
and without its classifier, so that ``net(x)`` is the pooled representation h with the model's own pooling (a
ViT's class token after the final norm, ConvNeXt's average pool and LayerNorm, ...), and whose state dict loads
into the same constructor outside selfsup (:attr:`LibraryBackbone.construction` is that code).

* **timm**: ``timm.create_model(name, pretrained=False, num_classes=0, in_chans=C, **args)``. Vision
  Transformers get ``img_size`` = the run's image size and, on images of 64 px or less, ``patch_size=4`` (32 px
  -> 8 x 8 tokens, as solo-learn's CIFAR ViT configs; 16-px patches would leave 2 x 2), unless the run sets
  ``backbone_patch_size``. ``args`` are any further constructor arguments
  (``--set backbone_args=num_heads=12,drop_path_rate=0.1``). ViTs are built with ``dynamic_img_size=True``, so
  that views of another size (SwAV's small crops) are encoded with a resampled position embedding; at the run's
  image size nothing changes. torchvision ViTs take one image size only.
* **torchvision**: ``torchvision.models.get_model(name, weights=None)``; the classifier (the last ``Linear``)
  becomes ``Identity`` and, for C != 3 input channels, the first convolution takes C channels. torchvision ViTs
  get ``image_size`` = the run's image size. For ResNets, ``--backbone resnet18`` (selfsup's own registration,
  with the CIFAR stem and other norms) is the same torchvision model.

MoCo v3's ViT recipe (``moco-v3/vits.py``) adds two options for ViTs: ``freeze_patch_embed`` (the patch
projection keeps its random initialisation, Xavier-uniform over its 3·p·p inputs and D outputs, and is not
trained: the paper's fix for training instability) and ``pos_embed="sincos"`` (a fixed 2-D sine-cosine position
embedding instead of a learned one). Both leave the state dict a plain timm one.

Unknown names fail with the closest names the library knows.
"""

from __future__ import annotations

import ast
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from selfsup.models.backbones import LIBRARY_PREFIXES, Backbone, is_library_name

TIMM, TORCHVISION = LIBRARY_PREFIXES
POS_EMBEDS = ("learned", "sincos")
SMALL_IMAGE_PATCH = 4
"""The ViT patch size on images of 64 px or less (32 px -> 8 x 8 tokens)."""


class BackboneNameError(ValueError):
    """A ``timm:`` / ``tv:`` name the library does not know; the message lists the closest ones."""


@dataclass(frozen=True)
class LibraryOptions:
    """What a library backbone takes from the run: image size and the ViT options (module docstring)."""

    image_size: int = 224
    patch_size: int = 0  # 0: automatic (4 on images of 64 px or less for ViTs, else the model's own)
    args: tuple[str, ...] = ()  # "key=value" constructor arguments
    freeze_patch_embed: bool = False
    pos_embed: str = "learned"


@dataclass(frozen=True)
class Construction:
    """How to build :attr:`LibraryBackbone.net` without selfsup: ``imports``, then ``lines`` that define
    ``net`` (random weights; load the exported state dict into it)."""

    library: str
    imports: tuple[str, ...]
    lines: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def code(self) -> str:
        return "\n".join([*self.imports, "", *self.lines])


class LibraryBackbone(Backbone):
    """A timm or torchvision model without its classifier: ``forward(x) = net(x)``, the pooled h."""

    has_stage_maps = False

    def __init__(self, net: nn.Module, out_dim: int, construction: Construction, transformer: bool) -> None:
        super().__init__(net, out_dim)
        self.construction = construction
        self.transformer = transformer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"a {self.construction.library} model has no ResNet stem")

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"selfsup reads no spatial feature maps from a {self.construction.library} model")

    def no_weight_decay(self) -> set[str]:
        """Names (in this module) of the parameters that take no weight decay besides norms and biases: a ViT's
        position embedding and class token (timm's ``no_weight_decay()``; torchvision's ``class_token`` and
        ``pos_embedding``)."""
        names = set(getattr(self.net, "no_weight_decay", lambda: set())())
        own = {n for n, _ in self.net.named_parameters()}
        out = {f"net.{n}" for n in names if n in own}
        out |= {f"net.{n}" for n in own if n.endswith(("class_token", "pos_embedding"))}
        return out


def parse_args(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``("num_heads=12", "drop_path_rate=0.1", "global_pool=avg")`` -> keyword arguments (Python literals,
    else strings). Raises ValueError for an item without ``=``."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"backbone_args items are key=value, got {item!r}")
        try:
            kwargs[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = text.strip()
    return kwargs


# ----------------------------------------------------------------------------- names


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def check_name(name: str) -> None:
    """Raise :class:`BackboneNameError` unless the library knows ``name`` (``timm:...`` or ``tv:...``)."""
    library, model = split_name(name)
    known = _timm_names() if library == TIMM else _torchvision_names()
    if model in known:
        return
    close = difflib.get_close_matches(model, known, n=5, cutoff=0.6)
    hint = f" Closest: {', '.join(library + c for c in close)}." if close else ""
    where = "timm.list_models()" if library == TIMM else "torchvision.models.list_models()"
    raise BackboneNameError(f"{library.rstrip(':')} has no model {model!r} (see {where}).{hint}")


def split_name(name: str) -> tuple[str, str]:
    lowered = name.lower()
    for prefix in LIBRARY_PREFIXES:
        if lowered.startswith(prefix):
            return prefix, name[len(prefix) :]
    raise BackboneNameError(f"{name!r} names no library model: use timm:NAME or tv:NAME")


def is_transformer(name: str) -> bool:
    """Whether ``timm:NAME`` / ``tv:NAME`` is a plain Vision Transformer (patches, position embedding, class
    token): timm's ``vision_transformer`` and ``deit`` families, torchvision's ``vit_*``. Decides the ViT
    recipes (``presets.VIT_PRESETS``)."""
    if not is_library_name(name):
        return False
    library, model = split_name(name)
    if library == TORCHVISION:
        return model.startswith("vit_")
    import timm.models

    try:
        module = timm.models.model_entrypoint(model).__module__
    except (RuntimeError, KeyError):
        return False
    return module.rsplit(".", 1)[-1] in ("vision_transformer", "deit")


# ----------------------------------------------------------------------------- building


def build_library_backbone(name: str, in_channels: int, options: LibraryOptions | None = None) -> LibraryBackbone:
    """``name`` (``timm:...`` or ``tv:...``) as a randomly initialised :class:`LibraryBackbone`."""
    options = options or LibraryOptions()
    check_name(name)
    if options.pos_embed not in POS_EMBEDS:
        raise ValueError(f"unknown pos_embed {options.pos_embed!r}. Valid: {', '.join(POS_EMBEDS)}")
    library, model = split_name(name)
    if library == TIMM:
        backbone = _timm_backbone(model, in_channels, options)
    else:
        backbone = _torchvision_backbone(model, in_channels, options)
    if (options.freeze_patch_embed or options.pos_embed != "learned") and not backbone.transformer:
        raise ValueError(f"freeze_patch_embed and pos_embed=sincos apply to Vision Transformers, not {name}")
    if options.freeze_patch_embed:
        freeze_patch_embedding(backbone.net)
    if options.pos_embed == "sincos":
        fixed_sincos_position_embedding(backbone.net)
    return backbone


def _timm_backbone(model: str, in_channels: int, options: LibraryOptions) -> LibraryBackbone:
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
    transformer = is_transformer(TIMM + model)
    if transformer:
        kwargs["img_size"] = options.image_size
        kwargs["dynamic_img_size"] = True  # multi-crop (SwAV's small crops): the position embedding is resampled
        if options.image_size <= 64:
            kwargs["patch_size"] = SMALL_IMAGE_PATCH
    if options.patch_size:
        kwargs["patch_size"] = options.patch_size
    kwargs.update(parse_args(options.args))
    net = timm.create_model(model, pretrained=False, **kwargs)
    construction = Construction(
        "timm",
        ("import timm",),
        (f"net = timm.create_model({model!r}, pretrained=False, {_call_args(kwargs)})",),
        kwargs,
    )
    return LibraryBackbone(net, int(cast(Any, net).num_features), construction, transformer)


def _torchvision_backbone(model: str, in_channels: int, options: LibraryOptions) -> LibraryBackbone:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None}
    transformer = is_transformer(TORCHVISION + model)
    if transformer:
        kwargs["image_size"] = options.image_size
    kwargs.update(parse_args(options.args))
    net = torchvision.models.get_model(model, **kwargs)
    lines = [f"net = torchvision.models.get_model({model!r}, {_call_args(kwargs)})"]
    head_name, head = _last_linear(net)
    _set_module(net, head_name, nn.Identity())
    lines.append(f"net.{_attribute_path(head_name)} = torch.nn.Identity()")
    if in_channels != 3:
        conv_name, conv = _first_conv(net)
        _set_module(net, conv_name, _with_in_channels(conv, in_channels))
        lines.append(
            f"net.{_attribute_path(conv_name)} = torch.nn.Conv2d({in_channels}, {conv.out_channels}, "
            f"kernel_size={conv.kernel_size}, stride={conv.stride}, padding={conv.padding}, "
            f"bias={conv.bias is not None})"
        )
    construction = Construction("torchvision", ("import torch", "import torchvision"), tuple(lines), kwargs)
    return LibraryBackbone(net, int(head.in_features), construction, transformer)


def _call_args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no Linear classifier to remove")
    return linears[-1]


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(net).__name__} has no Conv2d to adapt to the input channels")


def _with_in_channels(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


def _set_module(net: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


def _attribute_path(dotted: str) -> str:
    """``classifier.1`` -> ``classifier[1]`` (Python for the module at that path)."""
    return "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in dotted.split(".")).lstrip(".")


# ----------------------------------------------------------------------------- MoCo v3's ViT options


def freeze_patch_embedding(net: nn.Module) -> None:
    """MoCo v3's random patch projection (``vits.py``, ``stop_grad_conv1``): Xavier-uniform over the C·p·p
    inputs and D outputs of the projection, zero bias, then frozen: the random patch projection with which Chen,
    Xie and He (ICCV 2021) stabilise ViT training."""
    proj = _patch_projection(net)
    fan_in = proj.weight.shape[1] * proj.weight.shape[2] * proj.weight.shape[3]
    bound = math.sqrt(6.0 / float(fan_in + proj.weight.shape[0]))
    with torch.no_grad():
        proj.weight.uniform_(-bound, bound)
        if proj.bias is not None:
            proj.bias.zero_()
    for param in proj.parameters():
        param.requires_grad_(False)


def fixed_sincos_position_embedding(net: nn.Module, temperature: float = 10000.0) -> None:
    """MoCo v3's fixed 2-D sine-cosine position embedding (``vits.py``, ``build_2d_sincos_position_embedding``):
    D/4 frequencies each for sin(w), cos(w), sin(h), cos(h) of the patch grid, a zero vector for the class
    token, not trained."""
    pos = getattr(net, "pos_embed", None)
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    if not isinstance(pos, nn.Parameter) or grid is None:
        raise ValueError("pos_embed=sincos needs a timm Vision Transformer with a learned position embedding")
    dim = pos.shape[-1]
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs an embedding width divisible by 4, got {dim}")
    h, w = int(grid[0]), int(grid[1])
    # the official code's meshgrid(arange(w), arange(h)) with its default "ij" indexing, flattened row-major
    grid_w, grid_h = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    prefix = pos.shape[1] - table.shape[0]
    table = torch.cat([torch.zeros(prefix, dim), table])[None]
    with torch.no_grad():
        pos.copy_(table.to(pos.dtype))
    pos.requires_grad_(False)


def _patch_projection(net: nn.Module) -> nn.Conv2d:
    patch_embed = getattr(net, "patch_embed", None)
    proj = getattr(patch_embed, "proj", None) if patch_embed is not None else getattr(net, "conv_proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise ValueError("freeze_patch_embed needs a Vision Transformer with a convolutional patch projection")
    return proj
