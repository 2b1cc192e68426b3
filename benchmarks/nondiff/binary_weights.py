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

import amc_jax
import jax.numpy as jnp
import optax

from benchmarks.nondiff import _nondiff as nd
from amc_jax.examples import binary

SIGMA0 = binary.DEFAULT_SIGMA0
FLIP_FRACTION = binary.DEFAULT_FLIP_FRACTION
ADAM_LR = 1e-2


def methods_for(data: nd.Data, args):
  layer_sizes = nd.sizes(data, (args.hidden,))
  digits = data.name == "digits"
  mc_steps = args.mc_steps or (200 if args.quick else (50_000 if digits else 20_000))
  gd_steps = args.gd_steps or (50 if args.quick else (5_000 if digits else 2_000))

  def predict(p, x):
    return binary.apply(p, x, activation=jnp.tanh)

  def cross_entropy(p, x, y):
    return nd.cross_entropy_of(predict(p, x), y)

  methods = []
  for name, levels in (("binary", binary.BINARY), ("ternary", binary.TERNARY)):
    methods.append(nd.Method(
        f"aMC, {name} weights", functools.partial(binary.init_params, levels=levels),
        cross_entropy, predict,
        lambda seed, levels=levels: amc_jax.amc(
            SIGMA0, sigma_decay=1.0, proposal=binary.proposal(levels, FLIP_FRACTION), seed=seed),
        True, mc_steps, levels=levels,
        description=f"amc(sigma0={SIGMA0}, sigma_decay=1) with layerwise(partition(discrete("
                    f"{levels}, {FLIP_FRACTION:g}), gaussian())), T = 0, batch mode"))

    def surrogate(p, x, y, levels=levels):
      weights = nd.map_weights(lambda w: nd.quantise_ste(w, levels), p)
      return cross_entropy(weights, x, y)

    methods.append(nd.Method(
        f"BinaryConnect, {name}", nd.init_latent, surrogate, predict,
        lambda seed: optax.adam(ADAM_LR), False, gd_steps, project=nd.clip_latent, levels=levels,
        hard_params=lambda p, levels=levels: nd.map_weights(lambda w: nd.quantise(w, levels), p),
        description=f"optax.adam({ADAM_LR:g}) on latent weights in [-1, 1] (clipped), quantised "
                    f"to {levels} forward, identity backward (STE)"))
  return methods, layer_sizes


def main(argv=None):
  args = nd.parser(__doc__.splitlines()[0]).parse_args(argv)
  nd.setup(args)
  return nd.run_experiment("binary_weights", "binary / ternary weights", args, methods_for,
                           ("digits",))


if __name__ == "__main__":
  main()
