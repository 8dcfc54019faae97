"""kNN top-1 of a run's features at every depth of its backbone, trained against its random init.

    python benchmarks/feature_depth_knn.py runs/cpu-report/dim [--train 20000] [--test 10000]

For each stage of the backbone (encoders with ``stage_maps``: ``dim32``/``dim64``, the AMDIM and
patch encoders): its map mean-pooled over space; the last stage's map flattened; h (the backbone
output); z (the method's embedding). The random-init encoder is the run's method rebuilt with the
run's seed, as in ``selfsup eval``. It shows which depth a method trains: e.g. Deep InfoMax's local
objective trains the local map, not the FC layer used as h.
"""

from __future__ import annotations

import argparse

import torch

from selfsup.data.datasets import run_dataset
from selfsup.evaluation.evaluate import load_trained_method
from selfsup.evaluation.features import eval_batches
from selfsup.evaluation.knn import knn_top1
from selfsup.methods import build_method
from selfsup.rng import seed_everything
from selfsup.run_folder import RunFolder


@torch.no_grad()
def depth_features(method: torch.nn.Module, dataset, size: int) -> dict[str, torch.Tensor]:
    """Features at every depth for every image of ``dataset``."""
    out: dict[str, list[torch.Tensor]] = {}
    for batch in eval_batches(dataset, size, torch.device("cpu")):
        maps, h = method.backbone.stage_maps(batch)
        features = {f"stage{i} pooled": m.mean((2, 3)) for i, m in enumerate(maps)}
        features[f"stage{len(maps) - 1} flat"] = maps[-1].flatten(1)
        features["h"] = h
        features["z"] = method.embed(batch)[1]
        for key, value in features.items():
            out.setdefault(key, []).append(value.float())
    return {key: torch.cat(values) for key, values in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--train", type=int, default=20000, help="evenly spaced training images (0: all)")
    parser.add_argument("--test", type=int, default=10000, help="evenly spaced test images (0: all)")
    args = parser.parse_args(argv)
    cfg = RunFolder(args.run_dir).read_config()
    train, test = run_dataset(cfg, "train"), run_dataset(cfg, "test")
    train = train.evenly_spaced(args.train) if args.train else train
    test = test.evenly_spaced(args.test) if args.test else test
    size = int(cfg.augment.image_size)
    trained, _ = load_trained_method(args.run_dir, torch.device("cpu"), train.channels)
    seed_everything(cfg.seed)
    random_init = build_method(cfg, train.channels).eval()
    scores = {}
    for name, method in (("trained", trained), ("random init", random_init)):
        fit, held_out = depth_features(method, train, size), depth_features(method, test, size)
        scores[name] = {k: knn_top1(fit[k], train.labels, held_out[k], test.labels) for k in fit}
    print(f"{'features':<16}{'trained':>10}{'random init':>14}")
    for key in scores["trained"]:
        print(f"{key:<16}{100 * scores['trained'][key]:>10.2f}{100 * scores['random init'][key]:>14.2f}")


if __name__ == "__main__":
    main()
