"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, InstDisc §3.4).

Cosine similarity; each of the k nearest training samples votes for its class with weight
exp(s/T). k = 200 and T = 0.1 is the protocol of the public SSL benchmarks (InstDisc, MoCo's
CIFAR demo, lightly's benchmarks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted class of every test sample (weighted vote of its ``k`` nearest training samples)."""
    if len(train_features) == 0:
        raise ValueError("kNN needs at least one training sample")
    k = min(k, len(train_features))
    bank = F.normalize(train_features.float(), dim=1)
    predictions = []
    for start in range(0, len(test_features), chunk):
        queries = F.normalize(test_features[start : start + chunk].float(), dim=1)
        similarity, index = (queries @ bank.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(queries), num_classes, device=queries.device, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels.to(queries.device)[index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (a fraction) of :func:`knn_predict`."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return float((predicted.cpu() == test_labels.cpu()).float().mean())
