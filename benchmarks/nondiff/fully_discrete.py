"""Experiment 4: a fully discrete net, binary weights and sign units together.

Neither gradients nor their relaxations apply cleanly: the loss is piecewise
constant in every weight. aMC trains the net as it is (``discrete`` flips of
the weights, ``gaussian`` moves of the real biases and output gain; on the
cross-entropy and on the 0-1 loss). The surrogate is BinaryNet (Hubara et
al. 2016): Adam on latent weights in [-1, 1], sign weights and sign units
forward, identity (weights) and hard-tanh (units) straight-through
derivatives backward. Accuracies are of the binary net for all. See
``_nondiff.py`` for the conventions.

  python -m benchmarks.nondiff.fully_discrete            # full
  python -m benchmarks.nondiff.fully_discrete --quick    # smoke test
"""

from __future__ import annotations

from benchmarks.nondiff import _nondiff as nd
from amc_jax.examples import binary



def methods_for(data: nd.Data, args):
  layer_sizes = nd.sizes(data, (args.hidden,))
  mc_steps, gd_steps = nd.steps(data, args)
  levels = binary.BINARY

  predict, cross_entropy, error = nd.binary_net(binary.sign)

  return [
      nd.Method("aMC, cross-entropy", binary.init_params, cross_entropy, predict,
                nd.grid_amc(levels), True, mc_steps, levels=levels,
                description=f"{nd.grid_amc_description(levels)}, on the cross-entropy"),
      nd.Method("aMC, 0-1 loss", binary.init_params, error, predict, nd.grid_amc(levels), True,
                mc_steps, levels=levels,
                description=f"{nd.grid_amc_description(levels)}, on the training error"),
      nd.latent_weights_method(
          "BinaryNet (Adam + STE)", lambda p, x: binary.apply(p, x, activation=nd.sign_ste),
          predict, levels, gd_steps, nd.ADAM_LR,
          description=f"optax.adam({nd.ADAM_LR:g}) on latent weights in [-1, 1] (clipped); "
                      "sign weights and units forward; identity / hard-tanh STE backward"),
  ], layer_sizes


def main(argv=None):
  return nd.main("fully_discrete", "binary weights + sign units", __doc__, methods_for, argv)


if __name__ == "__main__":
  main()
