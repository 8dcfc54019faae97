"""Self-supervised losses as plain functions, one documented file per loss.

Every function cites its paper's equation and computes in float32 even under autocast
(:func:`~selfsup.losses.float32.float32_loss`); losses that need the global batch have a ``gather_distributed``
switch. Inputs are embeddings of shape (N, D) for the global-vector losses, and the feature maps or grids their
papers use for the others: DIM and AMDIM take local feature maps, CPC a grid of patch codes, SwAV prototype scores
and W-MSE a list of views; each docstring gives the shapes. Every public function is re-exported here
(``from selfsup.losses import nt_xent, vicreg, tico``).
"""

from selfsup.losses.amdim import AMDIMTerms, amdim_nce, amdim_terms, tanh_clip
from selfsup.losses.barlow_twins import (
    BarlowTwinsTerms,
    barlow_twins,
    barlow_twins_terms,
    batch_standardize,
    cross_correlation,
)
from selfsup.losses.byol import byol, byol_regression
from selfsup.losses.cosine import negative_cosine, simsiam
from selfsup.losses.cpc import cpc_infonce, infonce_lower_bound
from selfsup.losses.dim import (
    MI_ESTIMATORS,
    dim_scores,
    dv_mi_loss,
    gradient_penalty,
    jsd_mi_loss,
    local_global_mi_loss,
    nce_mi_loss,
    prior_discriminator_loss,
    prior_generator_loss,
)
from selfsup.losses.float32 import float32_loss
from selfsup.losses.moco import moco_infonce, moco_v3_contrastive
from selfsup.losses.nt_xent import margin_triplet, nt_logistic, nt_xent
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction, swav
from selfsup.losses.tico import COVARIANCE_BRANCHES, tico
from selfsup.losses.vicreg import VARIANCE_MODES, VICRegTerms, covariance_term, variance_term, vicreg, vicreg_terms
from selfsup.losses.wmse import normalized_mse, whiten, wmse

__all__ = [
    "amdim_nce",
    "amdim_terms",
    "AMDIMTerms",
    "barlow_twins",
    "barlow_twins_terms",
    "BarlowTwinsTerms",
    "batch_standardize",
    "byol",
    "byol_regression",
    "COVARIANCE_BRANCHES",
    "covariance_term",
    "cpc_infonce",
    "cross_correlation",
    "dim_scores",
    "dv_mi_loss",
    "float32_loss",
    "gradient_penalty",
    "infonce_lower_bound",
    "jsd_mi_loss",
    "local_global_mi_loss",
    "margin_triplet",
    "MI_ESTIMATORS",
    "moco_infonce",
    "moco_v3_contrastive",
    "nce_mi_loss",
    "negative_cosine",
    "normalized_mse",
    "nt_logistic",
    "nt_xent",
    "prior_discriminator_loss",
    "prior_generator_loss",
    "simsiam",
    "sinkhorn_knopp",
    "swapped_prediction",
    "swav",
    "tanh_clip",
    "tico",
    "VARIANCE_MODES",
    "variance_term",
    "vicreg",
    "vicreg_terms",
    "VICRegTerms",
    "whiten",
    "wmse",
]
