"""amc_jax: train neural networks with Metropolis Monte Carlo and aMC in JAX."""

from amc_jax._src.acceptance import metropolis_decision
from amc_jax._src.amc import AMCInfo
from amc_jax._src.amc import AMCState
from amc_jax._src.amc import amc
from amc_jax._src.amc import metropolis
from amc_jax._src.ensemble import init_ensemble
from amc_jax._src.proposals import gaussian_move
from amc_jax._src.proposals import standard_normal_like

__version__ = "0.1.0"

__all__ = (
    "AMCInfo",
    "AMCState",
    "amc",
    "gaussian_move",
    "init_ensemble",
    "metropolis",
    "metropolis_decision",
    "standard_normal_like",
)
