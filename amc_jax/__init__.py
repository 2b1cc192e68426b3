"""amc_jax: train neural networks with Metropolis Monte Carlo and aMC in JAX."""

# First, before anything computes: the XLA:CPU flag for jax issue 39103 on
# affected jaxlibs (see amc_jax/_src/xla_cpu.py; AMC_JAX_NO_XLA_CPU_WORKAROUND=1
# opts out).
from amc_jax._src import xla_cpu as _xla_cpu

_xla_cpu.apply_at_import()

from amc_jax._src.acceptance import metropolis_decision
from amc_jax._src.amc import amc
from amc_jax._src.amc import metropolis
from amc_jax._src.state import AMCInfo
from amc_jax._src.state import AMCState
from amc_jax._src.state import monte_carlo_state
from amc_jax._src.checkpoint import restore_checkpoint
from amc_jax._src.checkpoint import save_checkpoint
from amc_jax._src.correspondence import CorrespondenceResult
from amc_jax._src.correspondence import correspondence
from amc_jax._src.correspondence import drift_per_step
from amc_jax._src.correspondence import equivalent_gradient_descent
from amc_jax._src.correspondence import normalize_by_global_norm
from amc_jax._src.correspondence import normalized_sgd
from amc_jax._src.ensemble import init_ensemble
from amc_jax._src.fit import FitResult
from amc_jax._src.fit import ProgressiveBatching
from amc_jax._src.fit import fit
from amc_jax._src.fit import select_chain
from amc_jax._src.flax_utils import TrainState
from amc_jax._src.flax_utils import nnx_value_fn
from amc_jax._src.replicas import PopulationAnnealingState
from amc_jax._src.replicas import PopulationState
from amc_jax._src.replicas import ReplicaExchangeState
from amc_jax._src.replicas import coldest_replica
from amc_jax._src.replicas import population
from amc_jax._src.replicas import population_annealing
from amc_jax._src.replicas import replica_exchange
from amc_jax._src.probes import AcceptanceByLoss
from amc_jax._src.probes import LineProbe
from amc_jax._src.probes import acceptance_by_loss
from amc_jax._src.probes import gradient_norm
from amc_jax._src.probes import gradient_norm_along
from amc_jax._src.probes import loss_along_line
from amc_jax._src.proposals import gaussian_move
from amc_jax._src.proposals import standard_normal_like
from amc_jax._src.sharding import device_mesh
from amc_jax._src.sequential import SequentialState
from amc_jax._src.sequential import SequentialTest
from amc_jax._src.signal_norm import SignalNormWarning
from amc_jax._src.signal_norm import signal_norm_apply
from amc_jax._src.signal_norm import signal_norm_value_fn
from amc_jax._src.sharding import ensemble_map
from amc_jax._src.sharding import replicate
from amc_jax._src.sharding import shard_batch
from amc_jax._src.sharding import shard_ensemble
from amc_jax._src.sharding import shard_replicas
from amc_jax._src.xla_cpu import XLACPUWorkaroundWarning
from amc_jax._src.xla_cpu import use_xla_cpu_workaround
from amc_jax import proposals

__version__ = "0.1.0"

__all__ = (
    "AMCInfo",
    "AMCState",
    "AcceptanceByLoss",
    "CorrespondenceResult",
    "FitResult",
    "LineProbe",
    "PopulationAnnealingState",
    "PopulationState",
    "ProgressiveBatching",
    "ReplicaExchangeState",
    "SequentialState",
    "SequentialTest",
    "SignalNormWarning",
    "TrainState",
    "XLACPUWorkaroundWarning",
    "acceptance_by_loss",
    "amc",
    "coldest_replica",
    "correspondence",
    "device_mesh",
    "drift_per_step",
    "ensemble_map",
    "equivalent_gradient_descent",
    "fit",
    "gaussian_move",
    "gradient_norm",
    "gradient_norm_along",
    "init_ensemble",
    "loss_along_line",
    "metropolis",
    "metropolis_decision",
    "monte_carlo_state",
    "nnx_value_fn",
    "normalize_by_global_norm",
    "normalized_sgd",
    "population",
    "population_annealing",
    "proposals",
    "replica_exchange",
    "replicate",
    "restore_checkpoint",
    "save_checkpoint",
    "select_chain",
    "shard_batch",
    "shard_ensemble",
    "shard_replicas",
    "signal_norm_apply",
    "signal_norm_value_fn",
    "standard_normal_like",
    "use_xla_cpu_workaround",
)
