"""Self-supervised losses as plain functions, one documented file per loss.

Every function takes embeddings of shape (N, D), cites its paper's equation, computes in
float32, and has a ``gather_distributed`` switch where the loss needs the global batch.
"""

from selfsup.losses.nt_xent import margin_triplet, nt_logistic, nt_xent
from selfsup.losses.tico import tico
from selfsup.losses.vicreg import VICRegTerms, covariance_term, variance_term, vicreg, vicreg_terms

__all__ = [
    "VICRegTerms",
    "covariance_term",
    "margin_triplet",
    "nt_logistic",
    "nt_xent",
    "tico",
    "variance_term",
    "vicreg",
    "vicreg_terms",
]
