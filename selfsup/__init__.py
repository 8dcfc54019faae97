"""selfsup: self-supervised visual representation learning on PyTorch.

Twelve methods (CPC, Deep InfoMax, AMDIM, MoCo, SimCLR, SwAV, BYOL, SimSiam, W-MSE, TiCo,
VICReg, Barlow Twins) under one training engine, with kNN and linear-probe evaluation.
"""

__version__ = "0.1.0"
