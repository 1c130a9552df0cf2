"""Registers the built-in readouts trained by SGD: ``factorized``, ``gaussian2d`` and ``attention``."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .attention import AttentionParams, AttentionReadout
from .factorized import FactorizedParams, FactorizedReadout
from .gaussian import Gaussian2dParams, Gaussian2dReadout


@hookimpl
def register_readouts(register):
    register(
        "factorized",
        FactorizedReadout,
        params=FactorizedParams,
        description="Spatial mask [N, H, W] times feature vector [N, C] per neuron; SGD with L1 on both.",
    )
    register(
        "gaussian2d",
        Gaussian2dReadout,
        params=Gaussian2dParams,
        description="Latents read at one learned location per neuron (Gaussian-jittered while training); SGD, L1 features.",
    )
    register(
        "attention",
        AttentionReadout,
        params=AttentionParams,
        description="EGG's V4 readout: per-neuron query attends over positional-encoded latents; SGD, L1 features/queries.",
    )
