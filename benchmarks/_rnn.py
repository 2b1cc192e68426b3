"""The problem of Fig. 5 (a tanh RNN reading images one pixel per step),
shared by ``paper/fig5_rnn.py`` and ``studies/proposals.py``: its data, its
model and the summary of a chain's evaluations.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks import _mnist

TRAINED = 0.9  # a chain "trains" if its best-checkpoint test accuracy reaches this


def load_data(args) -> dict:
  """Binary pixel sequences ``int32 [n, T]`` and labels ``int32 [n]``, train and test."""
  if args.data == "digits":
    try:
      from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
      raise SystemExit("--data digits needs scikit-learn (pip install scikit-learn), "
                       "or pass --data-dir DIR for MNIST-format data") from e
    digits = load_digits()
    keep = digits.target <= 1
    images, labels = digits.images[keep], digits.target[keep].astype(np.int32)
    if not args.quick:
      images = images.repeat(2, axis=1).repeat(2, axis=2)  # 16x16, nearest
    bits = images > 7  # of 16
    side = bits.shape[-1]
    bits = np.concatenate([bits, np.zeros((len(bits), 1, side), bool)], axis=1)  # blank row
    seq = bits.reshape(len(bits), -1).astype(np.int32)
    order = np.random.default_rng(args.seed).permutation(len(seq))
    n_train = int(0.75 * len(seq))
    tr, te = order[:n_train], order[n_train:]
    desc = (f"scikit-learn load_digits classes 0/1 ({len(seq)} images), "
            + ("8x8" if args.quick else "8x8 upsampled x2 (nearest) to 16x16")
            + f", binarised (pixel > 7 of 16), one blank row appended; random 75/25 split "
              f"(seed {args.seed})")
    return dict(source="sklearn.load_digits", description=desc,
                x_train=seq[tr], y_train=labels[tr], x_test=seq[te], y_test=labels[te])

  directory = _mnist.data_dir(args.data_dir)
  out = {}
  for split in ("train", "test"):
    images, labels = _mnist.load_mnist(directory, split)
    keep = labels <= 1
    images, labels = images[keep], labels[keep].astype(np.int32)
    if split == "train":
      sel = np.random.default_rng(args.seed).permutation(len(images))[: args.mnist_train]
      images, labels = images[sel], labels[sel]
    k = args.pool  # 4: 7x7, sequences of 49; 2: 14x14 (196); 1: 28x28 (784, the paper's)
    n = 28 // k
    pooled = images.reshape(-1, n, k, n, k).mean(axis=(2, 4))
    out[f"x_{split}"] = (pooled > args.binarise_above).reshape(len(images), -1).astype(np.int32)
    out[f"y_{split}"] = labels
  side = f"{n}x{n}" + (f" (pooled {k}x{k})" if k > 1 else " (not pooled)")
  fashion = "fashion" in str(directory).lower()
  desc = (f"MNIST-format IDX files in {directory}"
          + (" (Fashion-MNIST: classes 0/1 are T-shirt/top vs trouser, not digits)" if fashion
             else "")
          + f", classes 0/1, 28x28 -> {side}, binarised (> {args.binarise_above:g}); "
          f"{len(out['x_train'])} training images (random, seed {args.seed}), "
          f"all {len(out['x_test'])} test images of the two classes")
  return dict(source=str(directory), description=desc, **out)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def make_model(layers: int, hidden: int):
  import jax
  import jax.numpy as jnp
  import optax

  def init(key, kind):
    keys = jax.random.split(key, 3 * layers + 2)
    params, fan = {}, 2
    for l in range(layers):
      shapes = {f"wi{l}": (fan, hidden), f"wh{l}": (hidden, hidden), f"b{l}": (hidden,)}
      for j, (name, shape) in enumerate(shapes.items()):
        k = keys[3 * l + j]
        if kind == "paper":
          params[name] = 1e-3 * jax.random.normal(k, shape)
        elif name.startswith("b"):
          params[name] = jnp.zeros(shape)
        else:
          params[name] = jax.random.normal(k, shape) / math.sqrt(shape[0])
      fan = hidden
    if kind == "paper":
      params["wo"] = 1e-3 * jax.random.normal(keys[-2], (hidden, 2))
      params["bo"] = 1e-3 * jax.random.normal(keys[-1], (2,))
    else:
      params["wo"] = jax.random.normal(keys[-2], (hidden, 2)) / math.sqrt(hidden)
      params["bo"] = jnp.zeros((2,))
    return params

  def logits(params, x):
    # The one-hot input times wi0 is a row of wi0: gather all steps at once.
    drive = params["wi0"][x.T] + params["b0"]  # [T, n, hidden]

    def step(hs, d):
      new, inp = [], d
      for l in range(layers):
        if l:
          inp = inp @ params[f"wi{l}"] + params[f"b{l}"]
        h = jnp.tanh(inp + hs[l] @ params[f"wh{l}"])
        new.append(h)
        inp = h
      return tuple(new), None

    h0 = tuple(jnp.zeros((x.shape[0], hidden), drive.dtype) for _ in range(layers))
    hs, _ = jax.lax.scan(step, h0, drive)
    return hs[-1] @ params["wo"] + params["bo"]

  def loss_fn(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

  return init, logits, loss_fn


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------


def summarize(ev: dict, eval_steps: np.ndarray) -> dict:
  """Per-chain best-checkpoint (lowest full training loss) and final numbers."""
  loss = np.asarray(ev["train_loss"], np.float64)  # [evals, chains]
  acc = np.asarray(ev["test_acc"], np.float64)
  safe = np.where(np.isfinite(loss), loss, np.inf)
  best = np.argmin(safe, axis=0)
  chains = np.arange(loss.shape[1])
  return {
      "best_step": eval_steps[best],
      "best_train_loss": loss[best, chains],
      "best_test_acc": acc[best, chains],
      "final_train_loss": loss[-1],
      "final_test_acc": acc[-1],
      "max_test_acc_seen": acc.max(axis=0),
  }
