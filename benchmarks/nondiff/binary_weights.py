"""Experiment 2: binary and ternary weights, aMC with discrete moves against BinaryConnect.

The net has weights on a grid (``{-1, +1}``, and a ternary ``{-1, 0, +1}``
variant), tanh hidden units, real biases and a real output gain. aMC keeps
the weights on the grid: ``discrete`` flips (or steps) about one weight per
move, ``gaussian`` moves the real leaves, joined by ``partition`` and moved
one leaf per step by ``layerwise`` (``amc_jax.examples.binary.proposal``).
BinaryConnect (Courbariaux et al. 2015) trains latent real weights in
[-1, 1] with Adam, quantising them in the forward pass (sign; ternary:
nearest of -1, 0, 1) with the identity as their derivative, and clips them
after each step. Accuracies are of the quantised net for both. See
``_nondiff.py`` for the conventions.

  python -m benchmarks.nondiff.binary_weights            # full
  python -m benchmarks.nondiff.binary_weights --quick    # smoke test
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from benchmarks.nondiff import _nondiff as nd
from amc_jax.examples import binary


def methods_for(data: nd.Data, args):
  layer_sizes = nd.sizes(data, (args.hidden,))
  mc_steps, gd_steps = nd.steps(data, args)

  predict, cross_entropy, error = nd.binary_net(jnp.tanh)

  methods = []
  for name, levels in (("binary", binary.BINARY), ("ternary", binary.TERNARY)):
    methods.append(nd.Method(
        f"aMC, {name} weights", functools.partial(binary.init_params, levels=levels),
        cross_entropy, predict, nd.grid_amc(levels), True, mc_steps, levels=levels,
        description=nd.grid_amc_description(levels)))
    methods.append(nd.latent_weights_method(
        f"BinaryConnect, {name}", predict, predict, levels, gd_steps, nd.ADAM_LR,
        description=f"optax.adam({nd.ADAM_LR:g}) on latent weights in [-1, 1] (clipped), quantised "
                    f"to {levels} forward, identity backward (STE)"))
  return methods, layer_sizes


def main(argv=None):
  return nd.main("binary_weights", "binary / ternary weights", __doc__, methods_for, argv)


if __name__ == "__main__":
  main()
