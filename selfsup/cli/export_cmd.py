"""``selfsup export RUN_DIR``: the pretrained backbone as a plain timm or torchvision state dict, with a model
card."""

from __future__ import annotations

import argparse

from selfsup.reuse import FORMATS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the pretrained backbone for plain timm or torchvision (with a model card)",
        description="Write the backbone of RUN_DIR's last checkpoint as a plain state dict that the library's "
        "own model loads without selfsup: a torchvision ResNet with the same stem (conv1 for the input channels "
        "and stem, maxpool = Identity for the CIFAR stem, fc = Identity), timm.create_model(NAME, num_classes=0, "
        "...) for a timm:NAME backbone, torchvision.models.get_model(NAME) without its classifier for tv:NAME; "
        "and a Markdown model card next to it (OUT with the suffix .md): method, recipe, data, evaluation "
        "results and the code that builds the model and loads the weights.",
        epilog="example:  selfsup export runs/demo --format safetensors --out encoder.safetensors",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `selfsup pretrain`")
    parser.add_argument(
        "--format",
        default=None,
        choices=FORMATS,
        help="timm or torchvision: torch.save'd state dict (.pt) for that library's model; safetensors: "
        ".safetensors (default: the backbone's library, timm or torchvision)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output file ending in .pt (timm, torchvision) or .safetensors; the model card goes next to it as .md "
        "(default: RUN_DIR/export/BACKBONE-METHOD.pt or .safetensors)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output file and card")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.reuse import export_backbone

    path = export_backbone(args.run_dir, args.format, args.out, force=args.force)
    print(f"selfsup export: wrote {path} and its model card {path.with_suffix('.md')}")
    return 0
