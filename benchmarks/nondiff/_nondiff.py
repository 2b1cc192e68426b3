"""What the non-differentiable-net benchmarks share: data, nets, surrogates, loops, tables.

Each script in ``benchmarks/nondiff/`` trains nets on which backpropagation
has nothing to work with (sign activations, binary or ternary weights, the
0-1 loss) by Monte Carlo on the true objective, and by Adam through the
usual surrogates (straight-through estimators), on the same nets and data:

* ``sign_activation.py``: real weights, sign hidden units; aMC on the
  cross-entropy against Adam with the hard-tanh straight-through estimator
  (Hubara et al. 2016).
* ``binary_weights.py``: {-1, +1} (and {-1, 0, +1}) weights, tanh units; aMC
  with ``discrete`` + ``gaussian`` moves against BinaryConnect (Courbariaux
  et al. 2015: Adam on clipped latent real weights, quantised forward pass).
* ``zero_one_loss.py``: the classification error itself as the loss, aMC at
  T = 0 and annealed, against aMC and Adam on the cross-entropy.
* ``fully_discrete.py``: binary weights and sign units together (BinaryNet).

Conventions (the same in every script):

* Nets are ``amc_jax.examples.binary.apply``: ``h = act(W h / sqrt(fan_in) +
  b)``, logits ``= gain * (W h / sqrt(fan_in) + b)``, weights ``w*``, biases
  ``b*``, a real output ``gain``. Real weights start N(0, 1) (so the layer is
  the usual 1/fan_in init); grid weights start uniform on the grid; latent
  weights of the surrogates uniform in [-1, 1]; biases 0, gain 1.
* Full batch on a fixed training set for every method. One **loss
  evaluation** is one pass over the training set: a Monte Carlo step costs
  one (batch mode caches U(x); the first step two), an Adam step one forward
  with its backward pass (so the count flatters Adam; the wall time does
  not).
* Test accuracy is always of the hard net (grid weights, sign units), taken
  every ``eval_every`` steps, outside the timed chunks; seconds are those of
  the compiled chunks (compilation excluded, reported apart).
* Several seeds per method; tables give the median over seeds of the test
  accuracy **at a budget**: the last checkpoint whose cost (evaluations or
  seconds) is within the budget (a run that ended earlier keeps its final
  value, marked ``*``).

Data: scikit-learn's digits (1437 train / 360 test, stratified,
random_state 0) and Fashion-MNIST (Debian ``dataset-fashion-mnist``, IDX
files in ``/usr/share/datasets/fashion-mnist`` or ``--data-dir``): a fixed
subset of the training images (the first ``--fmnist-train``), the full
10000-image test set. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = HERE.parent

import jax
import jax.numpy as jnp
import numpy as np
import optax

import amc_jax
from amc_jax import proposals
from amc_jax.examples import binary

from benchmarks import _common
from benchmarks._mnist import data_dir, load_mnist

# Runs write here unless given --out-dir benchmarks/results (which replaces
# the committed result deliberately).
OUT = _common.OUT

def at_budget(curve: dict, axis: str, budget: float) -> tuple[Optional[float], bool]:
  """Test accuracy at the last checkpoint with ``curve[axis] <= budget``, and
  whether the run ended before the budget (its final value is used)."""
  return _common.value_at(curve[axis], curve["test_accuracy"], budget)


# ---------------------------------------------------------------------------
# Command line and data


def parser(description: str) -> argparse.ArgumentParser:
  """The shared options (``_common.parser``) and those of every nondiff script."""
  p = _common.parser(description,
                     quick="a small configuration (smoke test, seconds; run by the test suite)",
                     no_plot=None, xla_workaround=_common.NO_XLA_WORKAROUND_HELP)
  p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; quick 1)")
  p.add_argument("--datasets", nargs="+", choices=["digits", "fmnist"], default=None)
  p.add_argument("--data-dir", type=pathlib.Path, default=None,
                 help="directory of Fashion-MNIST IDX files")
  p.add_argument("--fmnist-train", type=int, default=10_000,
                 help="training images of Fashion-MNIST (the first n; default 10000)")
  p.add_argument("--fmnist-test", type=int, default=10_000)
  p.add_argument("--hidden", type=int, default=64)
  p.add_argument("--mc-steps", type=int, default=None, help="Monte Carlo steps per run")
  p.add_argument("--gd-steps", type=int, default=None, help="Adam steps per run")
  p.add_argument("--eval-every", type=int, default=None,
                 help="steps between test-accuracy checkpoints (default: 50 per run)")
  p.add_argument("--no-plot", action="store_true")
  return p


def setup(args: argparse.Namespace) -> None:
  """Before the first computation: the XLA flags of this run (``_common.start``)."""
  _common.start(args)


class Data(NamedTuple):
  name: str
  description: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load(name: str, args: argparse.Namespace) -> Data:
  """The dataset ``name`` (``digits`` or ``fmnist``) as float32 pixels in [0, 1]."""
  if name == "digits":
    x_tr, y_tr, x_te, y_te = binary.load_digits()
    if args.quick:
      x_tr, y_tr = x_tr[:400], y_tr[:400]
    return Data("digits", f"scikit-learn digits 8x8, {len(x_tr)} train / {len(x_te)} test "
                "(train_test_split stratified, random_state 0)", x_tr, y_tr, x_te, y_te)
  directory = data_dir(args.data_dir)
  images, labels = load_mnist(directory, "train")
  test_images, test_labels = load_mnist(directory, "test")
  n_train = min(args.fmnist_train if not args.quick else 500, len(images))
  n_test = min(args.fmnist_test if not args.quick else 500, len(test_images))
  flat = lambda a, n: a[:n].reshape(n, -1).astype(np.float32) / 255.0  # noqa: E731
  return Data(
      "fmnist",
      f"Fashion-MNIST ({directory}): the first {n_train} training images, the first "
      f"{n_test} test images, 28x28 flattened, pixels / 255",
      flat(images, n_train), labels[:n_train].astype(np.int32),
      flat(test_images, n_test), test_labels[:n_test].astype(np.int32))


# ---------------------------------------------------------------------------
# Nets, surrogates and losses


def sizes(data: Data, hidden: Sequence[int]) -> tuple[int, ...]:
  return (data.x_train.shape[1], *hidden, int(data.y_train.max()) + 1)


def init_real(key: jax.Array, layer_sizes: Sequence[int]) -> dict:
  """Real weights N(0, 1) (the 1/fan_in init once the net divides by sqrt(fan_in))."""
  params = {}
  keys = jax.random.split(key, len(layer_sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, layer_sizes[:-1], layer_sizes[1:])):
    params[f"w{i}"] = jax.random.normal(k, (n_in, n_out), jnp.float32)
    params[f"b{i}"] = jnp.zeros((n_out,), jnp.float32)
  params["gain"] = jnp.ones((), jnp.float32)
  return params


def init_latent(key: jax.Array, layer_sizes: Sequence[int]) -> dict:
  """Latent real weights of the surrogates: uniform in [-1, 1] (BinaryConnect)."""
  params = init_real(key, layer_sizes)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(layer_sizes) - 1)
  for i, k in enumerate(keys):
    params[f"w{i}"] = jax.random.uniform(k, params[f"w{i}"].shape, jnp.float32, -1.0, 1.0)
  return params


def sign_ste(z: jax.Array) -> jax.Array:
  """sign(z) forward; the hard-tanh derivative 1{|z| <= 1} backward (BinaryNet's STE)."""
  clipped = jnp.clip(z, -1.0, 1.0)
  return clipped + jax.lax.stop_gradient(binary.sign(z) - clipped)


def quantise(w: jax.Array, levels: Sequence[float]) -> jax.Array:
  """Nearest level of {-1, +1} (sign) or {-1, 0, +1} (thresholds +-1/2)."""
  if tuple(levels) == binary.BINARY:
    return binary.sign(w)
  if tuple(levels) == binary.TERNARY:
    return jnp.round(jnp.clip(w, -1.0, 1.0))
  raise ValueError(f"no quantiser for levels {levels}")


def quantise_ste(w: jax.Array, levels: Sequence[float]) -> jax.Array:
  """Quantised forward, identity backward inside [-1, 1] (BinaryConnect's estimator)."""
  clipped = jnp.clip(w, -1.0, 1.0)
  return clipped + jax.lax.stop_gradient(quantise(w, levels) - clipped)


def map_weights(fn: Callable, params: dict) -> dict:
  return {k: fn(v) if k.startswith("w") else v for k, v in params.items()}


# aMC's move for real weights: a sparse Gaussian (each parameter joins with
# probability SPARSE_FRACTION, ~5 of the 4810 of the 64-64-10 net per step) of
# fixed sigma 1 (the params are O(1): the net divides by sqrt(fan_in)). Chosen
# on digits (sign net, seed 0, 1e4 steps; move_choice.py) among dense,
# layerwise and sparse moves: the dense move with the paper's decay stalled at
# 42-65% test accuracy (sigma shrinking 15-20x while stuck); layerwise reached
# 81%, this one 87%.
SPARSE_SIGMA0, SPARSE_FRACTION, SPARSE_N_RESET, SPARSE_DECAY = 1.0, 1e-3, 100, 1.0
SPARSE_AMC = (f"amc({SPARSE_SIGMA0:g}, n_reset={SPARSE_N_RESET}, sigma_decay={SPARSE_DECAY:g}, "
              f"proposal=proposals.sparse({SPARSE_FRACTION:g})), batch mode")


def sparse_amc(seed: int, temperature=0.0):
  """aMC with the sparse move above, at ``temperature`` (a float or a schedule)."""
  return amc_jax.amc(SPARSE_SIGMA0, n_reset=SPARSE_N_RESET, sigma_decay=SPARSE_DECAY,
                     temperature=temperature, proposal=proposals.sparse(SPARSE_FRACTION),
                     seed=seed)


def steps(data: Data, args: argparse.Namespace) -> tuple[int, int]:
  """``(Monte Carlo steps, gradient steps)`` per run: ``--mc-steps`` and
  ``--gd-steps``, else by mode and dataset (quick 200 / 50; digits 50000 /
  5000; Fashion-MNIST 20000 / 2000)."""
  digits = data.name == "digits"
  mc = args.mc_steps or (200 if args.quick else (50_000 if digits else 20_000))
  gd = args.gd_steps or (50 if args.quick else (5_000 if digits else 2_000))
  return mc, gd


# aMC's move for grid weights: amc_jax.examples.binary's (about one weight
# changes level per move, or the real leaves move by sigma 0.05), sigma fixed.
GRID_SIGMA0 = binary.DEFAULT_SIGMA0
GRID_FLIP_FRACTION = binary.DEFAULT_FLIP_FRACTION


def grid_amc(levels: Sequence[float]) -> Callable[[int], Any]:
  """``seed -> amc`` with the grid move for weights on ``levels``."""
  def make(seed: int):
    return amc_jax.amc(GRID_SIGMA0, sigma_decay=1.0,
                       proposal=binary.proposal(levels, GRID_FLIP_FRACTION), seed=seed)
  return make


def grid_amc_description(levels: Sequence[float]) -> str:
  return (f"amc(sigma0={GRID_SIGMA0}, sigma_decay=1) with layerwise(partition(discrete("
          f"{tuple(levels)}, {GRID_FLIP_FRACTION:g}), gaussian())), T = 0, batch mode")


def clip_latent(params: dict) -> dict:
  """BinaryConnect keeps the latent weights in [-1, 1] after every update."""
  return map_weights(lambda w: jnp.clip(w, -1.0, 1.0), params)


def latent_weights_method(name: str, net: Callable, predict: Callable,
                          levels: Sequence[float], steps: int, lr: float,
                          description: str) -> "Method":
  """BinaryConnect / BinaryNet: Adam on latent weights in [-1, 1] (clipped after
  every step), quantised to ``levels`` in the forward pass with the identity
  as their derivative; ``net(params, x)`` gives the surrogate logits and
  ``predict`` those of the hard net."""
  levels = tuple(levels)

  def objective(p, x, y):
    return cross_entropy_of(net(map_weights(lambda w: quantise_ste(w, levels), p), x), y)

  return Method(name, init_latent, objective, predict, lambda seed: optax.adam(lr), False, steps,
                project=clip_latent, levels=levels,
                hard_params=lambda p: map_weights(lambda w: quantise(w, levels), p),
                description=description)


def cross_entropy_of(logits: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def error_of(logits: jax.Array, y: jax.Array) -> jax.Array:
  """The 0-1 loss: the fraction misclassified (zero gradient almost everywhere)."""
  return jnp.mean((jnp.argmax(logits, axis=-1) != y).astype(jnp.float32))


# ---------------------------------------------------------------------------
# Methods and the loop


#: Adam's learning rate in the comparisons (full batch).
ADAM_LR = 1e-2


class Net(NamedTuple):
  """The binary-weight MLP of ``amc_jax.examples.binary`` with one activation:
  its logits, cross-entropy and training error."""

  predict: Callable
  cross_entropy: Callable
  error: Callable


def binary_net(activation: Callable) -> Net:
  def predict(p, x):
    return binary.apply(p, x, activation=activation)

  return Net(predict, lambda p, x, y: cross_entropy_of(predict(p, x), y),
             lambda p, x, y: error_of(predict(p, x), y))


class Method(NamedTuple):
  """One way of training one net.

  Attributes:
    name: the row label.
    init: ``key, layer_sizes -> params``.
    objective: ``params, x, y -> scalar``, what the optimizer minimises
      (through its surrogate forward pass for the gradient methods).
    predict: ``params, x -> logits`` of the hard net (for accuracies).
    optimizer: ``seed -> transformation``: an amc_jax transformation with
      that seed, or an optax optimizer.
    monte_carlo: whether ``optimizer`` is Monte Carlo (``value_fn``) or
      gradient-based (``value_and_grad`` of ``objective``).
    steps: steps per run.
    project: applied to the params after each gradient update (or None).
    levels: the grid that ``grid_params`` of the hard net must lie on.
    hard_params: ``params -> params`` of the hard net (e.g. the sign of the
      latent weights); identity by default.
    description: one line for the JSON.
  """

  name: str
  init: Callable
  objective: Callable
  predict: Callable
  optimizer: Any
  monte_carlo: bool
  steps: int
  project: Optional[Callable] = None
  levels: Optional[tuple] = None
  hard_params: Optional[Callable] = None
  description: str = ""


def _on_grid(params: dict, levels: Optional[tuple]) -> Optional[bool]:
  if levels is None:
    return None
  grid = np.asarray(levels, np.float32)
  return all(bool(np.all(np.isin(np.asarray(v), grid))) for k, v in params.items()
             if k.startswith("w"))


def run(method: Method, data: Data, layer_sizes: Sequence[int], seed: int,
        eval_every: int) -> dict:
  """Trains ``method`` from seed ``seed``; a curve of checkpoints and the final figures."""
  params = method.init(jax.random.key(seed), layer_sizes)
  x_tr, y_tr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_te, y_te = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  tx = method.optimizer(seed)
  hard = method.hard_params or (lambda p: p)
  state = tx.init(params)

  # The data are arguments of the compiled chunk, not constants folded into
  # it (XLA:CPU constant-operand fusions are where jax issue 39103 lives).
  def mc_body(x, y):
    def body(carry, _):
      p, s = carry
      updates, s = tx.update(None, s, p, value_fn=lambda q: method.objective(q, x, y))
      return (optax.apply_updates(p, updates), s), amc_jax.monte_carlo_state(s).info.accepted
    return body

  def gd_body(x, y):
    def body(carry, _):
      p, s = carry
      value, grads = jax.value_and_grad(method.objective)(p, x, y)
      updates, s = tx.update(grads, s, p)
      p = optax.apply_updates(p, updates)
      if method.project is not None:
        p = method.project(p)
      return (p, s), jnp.isfinite(value)
    return body

  body_of = mc_body if method.monte_carlo else gd_body

  @jax.jit
  def chunk(params, state, x, y):
    (params, state), flags = jax.lax.scan(body_of(x, y), (params, state), None, length=eval_every)
    return params, state, jnp.mean(flags.astype(jnp.float32))

  @jax.jit
  def measure(params, x_tr, y_tr, x_te, y_te):
    h = hard(params)
    train_logits = method.predict(h, x_tr)
    return (method.objective(params, x_tr, y_tr), 1.0 - error_of(train_logits, y_tr),
            1.0 - error_of(method.predict(h, x_te), y_te))

  start = time.perf_counter()
  chunk.lower(params, state, x_tr, y_tr).compile()
  compile_seconds = time.perf_counter() - start
  curve = {k: [] for k in ("step", "evaluations", "seconds", "objective", "train_accuracy",
                           "test_accuracy", "rate")}

  def record(step, seconds, rate):
    objective, train_acc, test_acc = (float(v) for v in measure(params, x_tr, y_tr, x_te, y_te))
    evaluations = step + (1 if method.monte_carlo and step > 0 else 0)
    for k, v in zip(curve, (step, evaluations, seconds, objective, train_acc, test_acc, rate)):
      curve[k].append(v)

  record(0, 0.0, float("nan"))
  seconds, done = 0.0, 0
  n_chunks = math.ceil(method.steps / eval_every)
  for _ in range(n_chunks):
    start = time.perf_counter()
    params, state, rate = jax.block_until_ready(chunk(params, state, x_tr, y_tr))
    seconds += time.perf_counter() - start
    done += eval_every
    record(done, seconds, float(rate))
  result = {
      "method": method.name,
      "seed": seed,
      "steps": done,
      "compile_seconds": compile_seconds,
      "curve": curve,
      "final_test_accuracy": curve["test_accuracy"][-1],
      "best_test_accuracy": max(curve["test_accuracy"]),
      "on_grid": _on_grid(hard(params), method.levels),
  }
  if method.monte_carlo:
    mc = amc_jax.monte_carlo_state(state)
    result["acceptance"] = float(mc.n_accept) / max(int(mc.count), 1)
    result["final_sigma"] = float(mc.sigma)
  return result


# ---------------------------------------------------------------------------
# Tables and plots


def budgets(runs: list[dict], axis: str) -> list[float]:
  """1 and 3 times powers of ten, from the first checkpoint's cost to the largest cost."""
  top = max(r["curve"][axis][-1] for r in runs)
  low = min(r["curve"][axis][1] for r in runs if len(r["curve"][axis]) > 1)
  out, e = [], math.floor(math.log10(low))
  while 10.0 ** e <= top:
    out += [float(f"{m * 10.0 ** e:.3g}") for m in (1, 3) if low <= m * 10.0 ** e <= top]
    e += 1
  return out


def summarise(runs: list[dict]) -> dict:
  """Per budget (evaluations and seconds): median test accuracy of each method and the winner."""
  methods = list(dict.fromkeys(r["method"] for r in runs))
  by_method = {m: [r for r in runs if r["method"] == m] for m in methods}
  table = {}
  for axis in ("evaluations", "seconds"):
    rows = []
    for b in budgets(runs, axis):
      accuracy, early = _common.medians_at(by_method, b, lambda r, axis=axis: r["curve"][axis],
                                           lambda r: r["curve"]["test_accuracy"])
      row = {"budget": b, "accuracy": accuracy, "ended_early": early}
      scored = {m: a for m, a in row["accuracy"].items() if a is not None}
      row["best"] = max(scored, key=scored.get) if scored else None
      rows.append(row)
    table[axis] = rows
  table["final"] = {
      m: {
          "median_final_test_accuracy": statistics.median(
              r["final_test_accuracy"] for r in runs if r["method"] == m),
          "median_best_test_accuracy": statistics.median(
              r["best_test_accuracy"] for r in runs if r["method"] == m),
          "median_seconds": statistics.median(
              r["curve"]["seconds"][-1] for r in runs if r["method"] == m),
          "evaluations": max(r["curve"]["evaluations"][-1] for r in runs if r["method"] == m),
      }
      for m in methods
  }
  return table


def format_table(name: str, summary: dict) -> str:
  methods = list(summary["final"])
  lines = [f"## {name}", "", "| method | evaluations | median s | final test acc | best test acc |",
           "|---|---|---|---|---|"]
  for m, f in summary["final"].items():
    lines.append(f"| {m} | {f['evaluations']} | {f['median_seconds']:.1f} | "
                 f"{f['median_final_test_accuracy']:.3f} | {f['median_best_test_accuracy']:.3f} |")
  for axis, unit in (("evaluations", "evaluations"), ("seconds", "s")):
    lines += ["", f"Median test accuracy at a budget of {unit} (* = run ended before the budget):",
              "", "| budget | " + " | ".join(methods) + " | best |",
              "|---" * (len(methods) + 2) + "|"]
    for row in summary[axis]:
      cells = []
      for m in methods:
        a = row["accuracy"][m]
        cells.append("-" if a is None else f"{a:.3f}" + ("*" if row["ended_early"][m] else ""))
      lines.append(f"| {row['budget']:g} | " + " | ".join(cells) + f" | {row['best']} |")
  return "\n".join(lines)


def plot(path: pathlib.Path, title: str, groups: dict[str, list[dict]]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), squeeze=False)
  for row, (name, runs) in enumerate(groups.items()):
    for col, axis in enumerate(("evaluations", "seconds")):
      ax = axes[row][col]
      for m in dict.fromkeys(r["method"] for r in runs):
        curves = [r["curve"] for r in runs if r["method"] == m]
        n = min(len(c[axis]) for c in curves)
        x = np.median([c[axis][1:n] for c in curves], axis=0)
        acc = np.asarray([c["test_accuracy"][1:n] for c in curves])
        line, = ax.plot(x, np.median(acc, axis=0), label=m)
        ax.fill_between(x, acc.min(axis=0), acc.max(axis=0), alpha=0.2, color=line.get_color())
      ax.set_xscale("log")
      ax.set_xlabel("loss evaluations" if axis == "evaluations" else "seconds (compiled steps)")
      ax.set_ylabel("test accuracy")
      ax.set_title(f"{title}: {name}")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_experiment(name: str, title: str, args: argparse.Namespace,
                   methods_for: Callable[[Data, argparse.Namespace], tuple[list[Method], tuple]],
                   default_datasets: Sequence[str]) -> dict:
  """Runs every method on every dataset and seed; prints tables, writes JSON (and PNG)."""
  wall = time.perf_counter()
  seeds = args.seeds or (1 if args.quick else 3)
  datasets = args.datasets or (["digits"] if args.quick else list(default_datasets))
  result = {"experiment": name, "title": title,
            "command": _common.command(),
            "machine": _common.machine(), "quick": args.quick, "seeds": seeds, "datasets": {}}
  groups = {}
  for ds in datasets:
    data = load(ds, args)
    methods, layer_sizes = methods_for(data, args)
    longest = max(m.steps for m in methods)
    runs = []
    for seed in range(seeds):
      for m in methods:
        every = args.eval_every or max(1, m.steps // 50)
        r = run(m, data, layer_sizes, seed, min(every, m.steps))
        runs.append(r)
        extra = (f"  acceptance {r['acceptance']:.4f}" if "acceptance" in r else "")
        print(f"[{ds} seed {seed}] {m.name:28s} steps {r['steps']:7d}  "
              f"{r['curve']['seconds'][-1]:7.1f} s  test acc {r['final_test_accuracy']:.3f} "
              f"(best {r['best_test_accuracy']:.3f}){extra}", flush=True)
    summary = summarise(runs)
    result["datasets"][ds] = {
        "data": data.description, "layer_sizes": list(layer_sizes), "longest_run_steps": longest,
        "methods": {m.name: m.description for m in methods}, "summary": summary, "runs": runs}
    groups[ds] = runs
    print(format_table(f"{title}: {ds}", summary), flush=True)
  result["wall_seconds"] = time.perf_counter() - wall
  args.out_dir.mkdir(parents=True, exist_ok=True)
  suffix = "_quick" if args.quick else ""
  path = args.out_dir / f"nondiff_{name}{suffix}.json"
  _common.write_json(path, _common.jsonable(result, digits=5))
  print(f"wall time {result['wall_seconds']:.0f} s")
  if not args.no_plot:
    plot(args.out_dir / f"nondiff_{name}{suffix}.png", title, groups)
  return result


def main(name: str, title: str, doc: str, methods_for: Callable, argv=None,
         datasets: Sequence[str] = ("digits",)):
  """A script's ``main``: parse (described by ``doc``'s first line), set up,
  run ``methods_for`` on ``datasets``."""
  args = parser(doc.splitlines()[0]).parse_args(argv)
  setup(args)
  return run_experiment(name, title, args, methods_for, datasets)
