"""``selfsup export RUN_DIR``: the pretrained backbone as a plain torchvision state dict, with a model card."""

from __future__ import annotations

import argparse

from selfsup.reuse import FORMATS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the pretrained backbone for plain torchvision (with a model card)",
        description="Write the backbone of RUN_DIR's last checkpoint as a plain state dict that a torchvision "
        "ResNet with the same stem loads without selfsup (conv1 for the input channels and stem, "
        "maxpool = Identity for the CIFAR stem, fc = Identity), and a Markdown model card next to it "
        "(OUT with the suffix .md): method, recipe, data, evaluation results and the loading code.",
        epilog="example:  selfsup export runs/demo --format safetensors --out encoder.safetensors",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `selfsup pretrain`")
    parser.add_argument(
        "--format",
        default="torchvision",
        choices=FORMATS,
        help="torchvision: torch.save'd state dict (.pt); safetensors: .safetensors (default: torchvision)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output file ending in .pt (torchvision) or .safetensors; the model card goes next to it as .md "
        "(default: RUN_DIR/export/BACKBONE-METHOD.pt or .safetensors)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output file and card")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.reuse import export_backbone

    path = export_backbone(args.run_dir, args.format, args.out, force=args.force)
    print(f"selfsup export: wrote {path} and its model card {path.with_suffix('.md')}")
    return 0
