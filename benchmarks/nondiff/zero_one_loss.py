"""Experiment 3: the 0-1 loss itself, trained by aMC at T = 0 and annealed.

The loss is the classification error, a step function of the params whose
gradient is zero almost everywhere: Adam cannot train on it at all (its
update is 0). aMC minimises it directly, at T = 0 (a move that misclassifies
no more examples is accepted, so the chain also wanders on the plateaus) and
with simulated annealing (T falling linearly to 0 over the first 80% of the
run, from T0 = 2 examples' worth of error). Baselines on the same net (a
real-weight tanh MLP): aMC and Adam on the cross-entropy, and, as the
control, Adam on the 0-1 loss. See
``_nondiff.py`` for the conventions.

  python -m benchmarks.nondiff.zero_one_loss            # full
  python -m benchmarks.nondiff.zero_one_loss --quick    # smoke test
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from benchmarks.nondiff import _nondiff as nd

ANNEAL_EXAMPLES = 2.0  # T0 in units of one training example's error, 1/n


def methods_for(data: nd.Data, args):
  layer_sizes = nd.sizes(data, (args.hidden,))
  mc_steps, gd_steps = nd.steps(data, args)
  t0 = ANNEAL_EXAMPLES / len(data.y_train)
  schedule = optax.linear_schedule(t0, 0.0, int(0.8 * mc_steps))

  predict, cross_entropy, error = nd.binary_net(jnp.tanh)

  amc = nd.sparse_amc
  common = nd.SPARSE_AMC
  return [
      nd.Method("aMC, 0-1 loss, T = 0", nd.init_real, error, predict, amc, True, mc_steps,
                description=f"{common}, T = 0, on the training error"),
      nd.Method("aMC, 0-1 loss, annealed", nd.init_real, error, predict,
                lambda seed: amc(seed, schedule), True, mc_steps,
                description=f"{common}, T linear from {t0:.3g} to 0 over {int(0.8 * mc_steps)} "
                            "steps, on the training error"),
      nd.Method("aMC, cross-entropy", nd.init_real, cross_entropy, predict, amc, True, mc_steps,
                description=f"{common}, T = 0, on the cross-entropy"),
      nd.Method(f"Adam {nd.ADAM_LR:g}, cross-entropy", nd.init_real, cross_entropy, predict,
                lambda seed: optax.adam(nd.ADAM_LR), False, gd_steps,
                description=f"optax.adam({nd.ADAM_LR:g}), full batch, on the cross-entropy"),
      # The control: the gradient of the 0-1 loss is zero almost everywhere,
      # so Adam on it never leaves the initial net.
      nd.Method(f"Adam {nd.ADAM_LR:g}, 0-1 loss", nd.init_real, error, predict,
                lambda seed: optax.adam(nd.ADAM_LR), False, gd_steps,
                description=f"optax.adam({nd.ADAM_LR:g}), full batch, on the training error "
                            "(its gradient is 0 almost everywhere)"),
  ], layer_sizes


def main(argv=None):
  return nd.main("zero_one_loss", "0-1 loss, tanh MLP", __doc__, methods_for, argv)


if __name__ == "__main__":
  main()
