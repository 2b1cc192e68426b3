"""Experiment 1: a sign-activation MLP, aMC on the true loss against the straight-through estimator.

The net has real weights and ``sign`` hidden units (``x -> sign(W1 x / 8 + b1)
-> logits``), so the loss is piecewise constant in the first layer's
weights: its gradient there is zero almost everywhere. aMC trains the net as
it is, on the cross-entropy, in batch mode. Adam needs a surrogate: the
straight-through estimator of BinaryNet (Hubara et al. 2016), sign forward,
the hard-tanh derivative ``1{|z| <= 1}`` backward. Accuracies are of the
true (sign) net for both. See ``_nondiff.py`` for the conventions.

  python -m benchmarks.nondiff.sign_activation            # full (digits and Fashion-MNIST)
  python -m benchmarks.nondiff.sign_activation --quick    # smoke test
"""

from __future__ import annotations

import optax

from benchmarks.nondiff import _nondiff as nd
from amc_jax.examples import binary

# aMC: the paper's adaptive move on params of scale ~1 (the net divides by
# sqrt(fan_in)); epsilon > 0 lets the move follow accepted directions.
ADAM_LRS = (1e-3, 1e-2)


def methods_for(data: nd.Data, args):
  layer_sizes = nd.sizes(data, (args.hidden,))
  mc_steps, gd_steps = nd.steps(data, args)

  def predict(p, x):
    return binary.apply(p, x, activation=binary.sign)

  def cross_entropy(p, x, y):
    return nd.cross_entropy_of(predict(p, x), y)

  def cross_entropy_ste(p, x, y):
    return nd.cross_entropy_of(binary.apply(p, x, activation=nd.sign_ste), y)

  methods = [nd.Method(
      "aMC, cross-entropy", nd.init_real, cross_entropy, predict,
      nd.sparse_amc, True, mc_steps,
      description=f"{nd.SPARSE_AMC}, T = 0, on the sign net's cross-entropy")]
  for lr in ADAM_LRS:
    methods.append(nd.Method(
        f"Adam {lr:g} + STE", nd.init_real, cross_entropy_ste, predict,
        lambda seed, lr=lr: optax.adam(lr), False, gd_steps,
        description=f"optax.adam({lr:g}), full batch, sign forward / hard-tanh STE backward"))
  return methods, layer_sizes


def main(argv=None):
  return nd.main("sign_activation", "sign-activation MLP", __doc__, methods_for, argv,
                 datasets=("digits", "fmnist"))


if __name__ == "__main__":
  main()
