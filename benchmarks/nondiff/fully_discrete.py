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

import amc_jax
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
  levels = binary.BINARY

  def predict(p, x):
    return binary.apply(p, x, activation=binary.sign)

  def cross_entropy(p, x, y):
    return nd.cross_entropy_of(predict(p, x), y)

  def error(p, x, y):
    return nd.error_of(predict(p, x), y)

  def surrogate(p, x, y):
    weights = nd.map_weights(lambda w: nd.quantise_ste(w, levels), p)
    return nd.cross_entropy_of(binary.apply(weights, x, activation=nd.sign_ste), y)

  def amc(seed):
    return amc_jax.amc(SIGMA0, sigma_decay=1.0, proposal=binary.proposal(levels, FLIP_FRACTION),
                       seed=seed)

  move = (f"amc(sigma0={SIGMA0}, sigma_decay=1) with layerwise(partition(discrete({levels}, "
          f"{FLIP_FRACTION:g}), gaussian())), T = 0, batch mode")
  return [
      nd.Method("aMC, cross-entropy", binary.init_params, cross_entropy, predict, amc, True,
                mc_steps, levels=levels, description=f"{move}, on the cross-entropy"),
      nd.Method("aMC, 0-1 loss", binary.init_params, error, predict, amc, True, mc_steps,
                levels=levels, description=f"{move}, on the training error"),
      nd.Method("BinaryNet (Adam + STE)", nd.init_latent, surrogate, predict,
                lambda seed: optax.adam(ADAM_LR), False, gd_steps, project=nd.clip_latent,
                levels=levels,
                hard_params=lambda p: nd.map_weights(lambda w: nd.quantise(w, levels), p),
                description=f"optax.adam({ADAM_LR:g}) on latent weights in [-1, 1] (clipped); "
                            "sign weights and units forward; identity / hard-tanh STE backward"),
  ], layer_sizes


def main(argv=None):
  args = nd.parser(__doc__.splitlines()[0]).parse_args(argv)
  nd.setup(args)
  return nd.run_experiment("fully_discrete", "binary weights + sign units", args, methods_for,
                           ("digits",))


if __name__ == "__main__":
  main()
