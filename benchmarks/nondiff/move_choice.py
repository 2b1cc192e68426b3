"""How aMC's move for the real-weight nets was chosen: dense, layerwise and sparse.

The sign-activation MLP of ``sign_activation.py`` on digits, aMC on the
cross-entropy at T = 0 in batch mode, 10^4 steps, with
- the paper's dense Gaussian move with sigma0 in {1e-2, 3e-2, 1e-1} and the
  paper's reset rule (n_reset = 100, sigma * 0.95);
- ``proposals.layerwise`` (one leaf per step), sigma 0.1 fixed;
- ``proposals.sparse(1e-3)`` (about 5 of the 4810 params per step),
  sigma 1 fixed: the move the other experiments use (``nd.sparse_amc``).
The record's ``final_sigma`` shows the dense moves' sigma decaying while
they are stuck. Same conventions and output as the other scripts.

  python -m benchmarks.nondiff.move_choice --seeds 1     # as run for the choice
  python -m benchmarks.nondiff.move_choice --quick       # smoke test
"""

from __future__ import annotations

import amc_jax
from amc_jax import proposals
from amc_jax.examples import binary

from benchmarks.nondiff import _nondiff as nd

DENSE_SIGMAS = (1e-2, 3e-2, 1e-1)
LAYERWISE_SIGMA = 0.1


def methods_for(data: nd.Data, args):
  layer_sizes = nd.sizes(data, (args.hidden,))
  steps = args.mc_steps or (200 if args.quick else 10_000)

  predict, cross_entropy, error = nd.binary_net(binary.sign)

  def method(name, make, description):
    return nd.Method(name, nd.init_real, cross_entropy, predict, make, True, steps,
                     description=f"{description}, T = 0, batch mode")

  methods = [
      method(f"dense, sigma0 {s:g}, decay 0.95",
             lambda seed, s=s: amc_jax.amc(s, n_reset=100, seed=seed),
             f"amc({s:g}, n_reset=100) (sigma * 0.95 at a reset)")
      for s in DENSE_SIGMAS
  ]
  methods.append(method(
      f"layerwise, sigma {LAYERWISE_SIGMA:g} fixed",
      lambda seed: amc_jax.amc(LAYERWISE_SIGMA, sigma_decay=1.0,
                               proposal=proposals.layerwise(), seed=seed),
      f"amc({LAYERWISE_SIGMA:g}, sigma_decay=1, proposal=proposals.layerwise())"))
  methods.append(method(f"sparse {nd.SPARSE_FRACTION:g}, sigma {nd.SPARSE_SIGMA0:g} fixed",
                        nd.sparse_amc, nd.SPARSE_AMC))
  return methods, layer_sizes


def main(argv=None):
  return nd.main("move_choice", "aMC's move, sign-activation MLP", __doc__, methods_for, argv)


if __name__ == "__main__":
  main()
