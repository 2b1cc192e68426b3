"""Fig. 8 of Whitelam et al. (2022): a ResNet-18 on MNIST trained by aMC and by gradients.

The paper: ResNet-18 (~1.11e7 parameters; the first layer's input channels
changed to take MNIST) with layer normalisation, which "homogenizes neuron
inputs and removes (or reduces) the need for signal norm"; aMC with (sigma0,
n_s, epsilon) = (1e-3, 100, 1e-3), signal norm off; gradient descent with
learning rate 1e-3 and gradient clipping at |grad U| > 1. "Gradient descent
trains faster than aMC, but aMC has similar ability to train in the
long-time limit: both GD and aMC train to small loss and about 99.2%
accuracy on the MNIST test set."

Here (``--help`` for every option):

* Model: torchvision's ResNet-18 layout in flax: 7x7/2 stem convolution with
  one input channel, 3x3/2 max pool, four stages of two basic blocks
  (``--width`` x 1, 2, 4, 8 channels; the paper's 64 gives 11.17M
  parameters), global average pool, Dense(10). Every BatchNorm of
  torchvision's net is a layer norm (``flax.linen.LayerNorm`` over height,
  width and channels, per-channel scale and bias), the paper's "layer
  normalization"; convolutions have no bias, as in torchvision.
* Loss: softmax cross-entropy on minibatches of ``--batch-size`` drawn by
  ``amc_jax.fit`` (aMC: two evaluations per step, U(x) and U(x') on the same
  minibatch).
* aMC: ``amc_jax.amc(1e-3, epsilon=1e-3, n_reset=100)``, signal norm off;
  init: every convolution and Dense kernel and the Dense bias ~ N(0, sigma0^2)
  (the paper's x_i ~ N(0, sigma0^2)), layer-norm scales 1 and biases 0.
* Adam (the issue's baseline) and GD (the paper's), both after
  ``optax.clip_by_global_norm(1.0)``, learning rate 1e-3, flax's default
  init (LeCun-normal kernels).
* Data: MNIST-format IDX files (``--data-dir``, ``$AMC_JAX_DATA_DIR``,
  default Debian's Fashion-MNIST: the paper used MNIST, which is not
  installed here). Images / 255, shape 28x28x1. Every ``--eval-every`` steps:
  test accuracy on the test set and the loss on the first ``--eval-train``
  training images, in batches of ``--eval-batch``.

Full mode is sized for one GPU (``--steps`` aMC steps, ``--grad-steps``
gradient steps; ~10-20 minutes on an H200-class device, an estimate: it has
not been run), and refuses to start on a CPU without ``--allow-cpu``. It was
NOT run for the committed results: no accelerator was available.
``--quick`` (the test suite's smoke test, ``tests/test_benchmarks_paper.py``)
uses width 4, 16 steps and a handful of images, and compiles with XLA's CPU
backend optimisation off.

  python -m benchmarks.paper.fig8_resnet                 # on a GPU
  python -m benchmarks.paper.fig8_resnet --quick --data-dir DIR
"""

from __future__ import annotations

import numpy as np

from benchmarks.paper import _paper

NAME = "fig8_resnet"
SIGMA0, EPSILON, N_RESET = 1e-3, 1e-3, 100
LR, CLIP = 1e-3, 1.0
CLAIM = ("Fig. 8: ResNet-18 (~1.11e7 parameters, layer norm) on MNIST; aMC (sigma0, n_s,"
         " epsilon) = (1e-3, 100, 1e-3), signal norm off; GD lr 1e-3 with clipping at"
         " |grad U| > 1. GD trains faster than aMC, but both reach small loss and about"
         " 99.2% test accuracy in the long-time limit.")


def make_model(width: int):
  """ResNet-18 (torchvision layout) with layer norms, 1 input channel, 10 classes."""
  import flax.linen as nn
  import jax.numpy as jnp

  def norm():
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)

  class Block(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
      y = nn.Conv(self.features, (3, 3), (self.stride, self.stride), padding=1,
                  use_bias=False)(x)
      y = nn.relu(norm()(y))
      y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
      y = norm()(y)
      if self.stride != 1 or x.shape[-1] != self.features:
        x = norm()(nn.Conv(self.features, (1, 1), (self.stride, self.stride),
                           use_bias=False)(x))
      return nn.relu(x + y)

  class ResNet18(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
      x = nn.Conv(self.width, (7, 7), (2, 2), padding=3, use_bias=False)(x)
      x = nn.relu(norm()(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
      for i, mult in enumerate((1, 2, 4, 8)):
        for j in range(2):
          x = Block(self.width * mult, 2 if (i > 0 and j == 0) else 1)(x)
      x = jnp.mean(x, axis=(1, 2))
      return nn.Dense(10)(x)

  return ResNet18(width)


def load(args):
  directory = _paper.data_dir(args.data_dir)
  out = {}
  for split, n in (("train", args.train_examples), ("test", args.test_examples)):
    images, labels = _paper.load_mnist(directory, split)
    images, labels = images[:n], labels[:n]
    out[split] = ((images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32))
  fashion = "fashion" in str(directory).lower()
  what = {"directory": str(directory), "name": "Fashion-MNIST" if fashion else
          "MNIST-format IDX files", "paper_used": "MNIST",
          "train_examples": len(out["train"][1]), "test_examples": len(out["test"][1]),
          "preprocessing": "pixels / 255, 28x28x1"}
  return out["train"], out["test"], what


def gaussian_init(params, key, std):
  """Every kernel and the Dense bias ~ N(0, std^2); layer-norm scales 1, biases 0."""
  import jax

  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    names = [getattr(e, "key", "") for e in path]
    in_norm = any(str(n).startswith("LayerNorm") for n in names)
    if in_norm:
      out.append(leaf)
    else:
      out.append(std * jax.random.normal(k, leaf.shape, leaf.dtype))
  return jax.tree_util.tree_unflatten(tree, out)


def main(argv=None):
  p = _paper.parser(__doc__.split("\n")[0])
  _paper.add_data_dir(p)
  p.add_argument("--width", type=int, default=None, help="base channels (default 64; quick 4)")
  p.add_argument("--methods", nargs="+", default=None, choices=("amc", "adam", "gd"),
                 help="default amc adam gd (quick: amc adam)")
  p.add_argument("--steps", type=int, default=None, help="aMC steps (default 100000; quick 16)")
  p.add_argument("--grad-steps", type=int, default=None,
                 help="Adam and GD steps (default 20000; quick 16)")
  p.add_argument("--batch-size", type=int, default=None, help="minibatch (default 1000; quick 16)")
  p.add_argument("--eval-every", type=int, default=None, help="default 1000 (quick 8)")
  p.add_argument("--eval-train", type=int, default=None,
                 help="training images for the loss at evaluations (default 10000; quick 64)")
  p.add_argument("--eval-batch", type=int, default=None, help="default 1000 (quick 64)")
  p.add_argument("--train-examples", type=int, default=None,
                 help="first N training images (default all; quick 256)")
  p.add_argument("--test-examples", type=int, default=None,
                 help="first N test images (default all; quick 64)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--allow-cpu", action="store_true",
                 help="run the full mode on a CPU anyway (days at width 64)")
  args = p.parse_args(argv)
  q = args.quick
  if q:
    _paper.quick_compile()  # before JAX starts: it reads XLA_FLAGS once
  defaults = dict(width=4 if q else 64, methods=["amc", "adam"] if q else ["amc", "adam", "gd"],
                  steps=16 if q else 100_000, grad_steps=16 if q else 20_000,
                  batch_size=16 if q else 1000, eval_every=8 if q else 1000,
                  eval_train=64 if q else 10_000, eval_batch=64 if q else 1000,
                  train_examples=256 if q else None, test_examples=64 if q else None)
  for k, v in defaults.items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  for k in ("steps", "grad_steps"):
    if getattr(args, k) % args.eval_every:
      p.error(f"--{k.replace('_', '-')} must be a multiple of --eval-every")

  import jax
  import jax.numpy as jnp
  import optax
  import amc_jax

  amc_jax.use_xla_cpu_workaround()
  device = jax.devices()[0]
  if not q and device.platform == "cpu" and not args.allow_cpu:
    raise SystemExit("fig8_resnet.py's full mode is sized for a GPU (ResNet-18, 1e5 aMC steps"
                     " on minibatches of 1000); on a CPU pass --allow-cpu, or use --quick.")
  timer = _paper.Timer()
  train, test, data_what = load(args)
  xtr, ytr = map(jnp.asarray, train)
  xte, yte = map(jnp.asarray, test)
  model = make_model(args.width)
  flax_params = model.init(jax.random.key(args.seed), xtr[:1])["params"]
  n_params = int(sum(v.size for v in jax.tree_util.tree_leaves(flax_params)))
  print(f"ResNet-18 width {args.width}: {n_params} parameters on {device}; data"
        f" {data_what['name']} {len(ytr)} train / {len(yte)} test", flush=True)

  def loss_fn(params, batch):
    x, y = batch
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  n_eval_train = min(args.eval_train, len(ytr))
  eval_batch = min(args.eval_batch, n_eval_train, len(yte))

  def batched(params, x, y):
    """(mean loss, accuracy) over x in batches of eval_batch (the tail is dropped)."""
    n = (len(y) // eval_batch) * eval_batch
    xb = x[:n].reshape(-1, eval_batch, *x.shape[1:])
    yb = y[:n].reshape(-1, eval_batch)

    def one(b):
      logits = model.apply({"params": params}, b[0])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, b[1]).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) == b[1])

    losses, accs = jax.lax.map(one, (xb, yb))
    return jnp.mean(losses), jnp.mean(accs)

  @jax.jit
  def evaluate(params):
    train_loss, train_acc = batched(params, xtr[:n_eval_train], ytr[:n_eval_train])
    _, test_acc = batched(params, xte, yte)
    return {"train_loss": train_loss, "train_acc": train_acc, "test_acc": test_acc}

  runs = {}
  for method in args.methods:
    if method == "amc":
      tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET, signal_norm=False,
                       seed=args.seed)
      params = gaussian_init(flax_params, jax.random.key(args.seed + 1), SIGMA0)
      steps, what = args.steps, (f"amc_jax.amc({SIGMA0}, epsilon={EPSILON}, n_reset={N_RESET},"
                                 " signal_norm=False); init kernels and Dense bias"
                                 f" ~ N(0, {SIGMA0}^2), layer norms 1/0")
    else:
      opt = optax.adam(LR) if method == "adam" else optax.sgd(LR)
      tx = optax.chain(optax.clip_by_global_norm(CLIP), opt)
      params = flax_params
      steps, what = args.grad_steps, (f"optax.chain(optax.clip_by_global_norm({CLIP}),"
                                      f" optax.{'adam' if method == 'adam' else 'sgd'}({LR}));"
                                      " flax default init")
    first = jax.device_get(evaluate(params))
    t = _paper.Timer()
    # The paper's minibatch mode (fixed-size minibatches), not the sequential test.
    r = amc_jax.fit(tx, params, loss_fn, (xtr, ytr), steps=steps, batch_size=args.batch_size,
                    sequential=False, key=args.seed, chunk=args.eval_every, log_every=args.eval_every,
                    eval_fn=evaluate, eval_every=args.eval_every, progress=False)
    wall = t()
    ev = {k: np.concatenate([[float(first[k])], np.asarray(v, np.float64)])
          for k, v in r.history["eval"].items()}
    runs[method] = {
        "what": what, "steps": steps, "wall_s": wall, "ms_per_step": 1e3 * wall / steps,
        "eval_step": [0] + r.history["eval_step"].tolist(),
        "eval": {k: v.tolist() for k, v in ev.items()},
        "final_test_acc": float(ev["test_acc"][-1]), "best_test_acc": float(ev["test_acc"].max()),
        "final_train_loss": float(ev["train_loss"][-1]),
        "history_step": r.history["step"].tolist(),
        "history_minibatch_loss": np.asarray(r.history["loss"], np.float64).tolist(),
    }
    if method == "amc":
      runs[method]["acceptance"] = np.asarray(r.history["acceptance"], np.float64).tolist()
      runs[method]["final_sigma"] = float(r.history["sigma"][-1])
    print(f"{method}: test accuracy {ev['test_acc'][0]:.3f} -> {ev['test_acc'][-1]:.3f}, train"
          f" loss {ev['train_loss'][0]:.4f} -> {ev['train_loss'][-1]:.4f} in {steps} steps"
          f" ({wall:.1f} s, {1e3 * wall / steps:.1f} ms/step)", flush=True)

  wall = timer()
  if q:
    verdict = ("NOT RUN at the paper's scale: quick smoke test only (width"
               f" {args.width}, {n_params} parameters, {args.steps} aMC steps on"
               f" {data_what['train_examples']} images): it checks that the script runs end to"
               " end, not the claim. The full mode needs an accelerator, and none was"
               " available.")
  else:
    acc = {m: r["best_test_acc"] for m, r in runs.items()}
    verdict = ("Full run on " + str(device) + ": best test accuracy "
               + ", ".join(f"{m} {a:.2%}" for m, a in acc.items())
               + " (paper: about 99.2% for both GD and aMC on MNIST).")
  json_path, png_path = _paper.paths(args.out_dir, NAME)
  if not args.no_plot:
    plt = _paper.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"amc": "C2", "adam": "C0", "gd": "0.5"}
    for m, r in runs.items():
      s = np.maximum(np.asarray(r["eval_step"], np.float64), 0.7)
      a.semilogx(s, r["eval"]["train_loss"], color=colors[m], label=m)
      b.semilogx(s, r["eval"]["test_acc"], color=colors[m], label=m)
    a.set(xlabel="step n (0 drawn at 0.7)", ylabel="training loss U", yscale="log")
    b.set(xlabel="step n", ylabel="test accuracy C")
    a.legend()
    fig.suptitle(f"Fig. 8: ResNet-18 (width {args.width}, {n_params} parameters), layer norm,"
                 f" {data_what['name']}" + (" (quick smoke test)" if q else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
  record = {
      "name": NAME, "paper": "Whitelam et al. 2022, Fig. 8", "claim": CLAIM, "data": data_what,
      "config": {"quick": q, "width": args.width, "n_params": n_params,
                 "paper_n_params": 11_100_000, "methods": args.methods, "steps_amc": args.steps,
                 "steps_gradient": args.grad_steps, "batch_size": args.batch_size,
                 "eval_every": args.eval_every, "eval_train": n_eval_train,
                 "eval_batch": eval_batch, "seed": args.seed,
                 "model": ("torchvision ResNet-18 layout (7x7/2 stem, 3x3/2 max pool, 4 stages x"
                           " 2 basic blocks, global average pool, Dense(10)), 1 input channel,"
                           " every BatchNorm replaced by LayerNorm over (H, W, C)"),
                 "amc": {"sigma0": SIGMA0, "epsilon": EPSILON, "n_reset": N_RESET,
                         "signal_norm": False},
                 "gradient": {"lr": LR, "clip_by_global_norm": CLIP},
                 "device": str(device),
                 "xla_flags_quick": _paper.QUICK_XLA_FLAG if q else None},
      "measured": {"runs": runs},
      "run_at_paper_scale": (not q) and device.platform != "cpu",
      "reproduced": None if q else "see verdict",
  }
  return _paper.finish(json_path, record, verdict, wall, add=True)


if __name__ == "__main__":
  main()
