"""Evaluation of frozen representations: kNN, linear probe, baselines, collapse diagnostics."""

from selfsup.evaluation.collapse import effective_rank, singular_values
from selfsup.evaluation.knn import knn_predict, knn_top1
from selfsup.evaluation.linear import linear_probe_top1

__all__ = ["effective_rank", "knn_predict", "knn_top1", "linear_probe_top1", "singular_values"]
