"""Minibatch training that converges: the sequential test against fixed and progressive batches.

Two nets on the first 10k Fashion-MNIST training images (test accuracy on the
10k test images), cross-entropy, flax's default (LeCun normal) init for every
method, 3 seeds:

* ``cnn``: conv 3x3x8 stride 2 - tanh - conv 3x3x16 stride 2 - tanh - dense 10
  (9098 params, the net of issue 21);
* ``mlp``: the paper's 784-16-16-10 tanh MLP (12,730 params).

Methods, each at epsilon = 0 and at the paper's epsilon = 1e-2 (sigma0 =
1e-2, n_reset = 100, the README's settings): full-batch aMC; fixed-size
minibatches of 250 and 1000 (``fit(..., sequential=False)``); progressive
batching with the paper's settings (start 500, factor 2, threshold 0.1,
reset); the sequential test (:class:`amc_jax.SequentialTest`, chunks of 250)
at confidence 0.95 and 0.99; and Adam (lr 1e-3, minibatches of 250). The
sequential test at 0.95 is ``fit(..., batch_size=250)`` with a per-example
loss, the default, and the recommended recipe.

Every method runs to the same budget of data passes (one pass = N per-example
loss evaluations; a gradient step on B examples counts B, not the ~3x a
backward pass costs in time). Measured at ~20 checkpoints: full-training-set
loss and test accuracy against passes and against wall seconds (the fit calls
alone, compilation included; evaluation excluded).

Summaries per model and method (median over seeds):

* ``passes_to_full_batch``: the passes at which the test accuracy first reaches
  full-batch aMC's final test accuracy (same seed and epsilon), as a fraction
  of the budget (full-batch aMC's own passes); the target is <= 1/3;
* ``drift``: the largest ratio, over checkpoints, of the full-training loss to
  the best so far, minus 1; the target is <= 5%.

Runs are written to the JSON as they finish, and a rerun skips the runs the
JSON already holds (``--fresh`` starts over).

    python -m benchmarks.studies.minibatch --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from benchmarks import _common, _mnist

MODELS = ("mlp", "cnn")
EPSILONS = (0.0, 1e-2)
SIGMA0, N_RESET = 1e-2, 100


def methods(quick: bool):
  """(name, kind, options): kind is full / fixed / progressive / sequential / adam."""
  chunk = 25 if quick else 250
  rows = [
      ("full batch", "full", {}),
      (f"fixed {chunk}", "fixed", {"batch": chunk}),
      (f"fixed {4 * chunk}", "fixed", {"batch": 4 * chunk}),
      ("progressive", "progressive", {"start": 2 * chunk}),
      ("sequential 0.8", "sequential", {"chunk": chunk, "confidence": 0.8}),
      ("sequential 0.95", "sequential", {"chunk": chunk, "confidence": 0.95}),
      ("sequential 0.95 every chunk", "sequential",
       {"chunk": chunk, "confidence": 0.95, "growth": 1.0}),
      ("sequential 0.99 every chunk", "sequential",
       {"chunk": chunk, "confidence": 0.99, "growth": 1.0}),
  ]
  out = [(f"{name}, eps={eps:g}", kind, dict(opts, epsilon=eps)) for eps in EPSILONS
         for name, kind, opts in rows]
  return out + [("adam", "adam", {"batch": chunk})]


def build(model_name):
  import flax.linen as nn
  import jax.numpy as jnp

  if model_name == "mlp":
    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.tanh(nn.Dense(16)(x))
        x = nn.tanh(nn.Dense(16)(x))
        return nn.Dense(10)(x)
  else:
    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        x = x[..., None]
        x = nn.tanh(nn.Conv(8, (3, 3), strides=2)(x))
        x = nn.tanh(nn.Conv(16, (3, 3), strides=2)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))
  del jnp
  return Net()


def run_one(model_name, method, seed, data, budget, n_checkpoints):
  import jax
  import jax.numpy as jnp
  import optax
  import amc_jax

  name, kind, opts = method
  xtr, ytr, xte, yte = data
  n = len(xtr)
  model = build(model_name)
  params = model.init(jax.random.key(seed), xtr[:1])

  def per_example(p, batch):
    x, y = batch
    logits = model.apply(p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)

  def mean_loss(p, batch):
    return jnp.mean(per_example(p, batch))

  @jax.jit
  def evaluate(p):
    loss = jnp.mean(per_example(p, (xtr, ytr)))
    acc = jnp.mean(jnp.argmax(model.apply(p, xte), -1) == yte)
    return loss, acc

  def error(p, batch):
    x, y = batch
    return jnp.mean(jnp.argmax(model.apply(p, x), -1) != y)

  eps = opts.get("epsilon", 0.0)
  if kind == "adam":
    tx = optax.adam(1e-3)
  elif kind == "sequential":
    tx = amc_jax.amc(SIGMA0, epsilon=eps, n_reset=N_RESET, seed=seed)
  else:
    tx = amc_jax.amc(SIGMA0, epsilon=eps, n_reset=N_RESET, seed=seed)

  per_checkpoint = budget / n_checkpoints
  # Steps per checkpoint from the known cost per step; the sequential test's
  # cost per step is measured as it goes (steps rounded to a power of two, to
  # bound the number of compiled programs).
  rate = {"full": 1.0, "progressive": None, "adam": opts.get("batch", 1) / n,
          "fixed": 2.0 * opts.get("batch", 1) / n, "sequential": None}[kind]
  state, passes, wall = None, 0.0, 0.0
  loss0, acc0 = (float(v) for v in evaluate(params))
  curve = {"passes": [0.0], "wall": [0.0], "loss": [loss0], "test_accuracy": [acc0],
           "sigma": [SIGMA0], "batch_size": [0]}
  segment, size = 0, opts.get("start")
  while passes < budget * (1 - 1e-9):
    want = min(per_checkpoint, budget - passes)
    if kind == "progressive":
      step_rate = size / n
    else:
      # A sequential step reads at least one chunk, at x and (cache cold) at x.
      step_rate = rate if rate is not None else curve.get("_rate", 2.0 * opts["chunk"] / n)
    steps = max(1, int(round(want / step_rate)))
    if kind == "sequential":
      steps = int(2 ** max(0, np.floor(np.log2(steps))))
    kw = dict(steps=steps, key=seed * 1000 + segment, opt_state=state, progress=False)
    if kind == "fixed":
      kw.update(batch_size=opts["batch"], sequential=False)
    elif kind == "adam":
      kw.update(batch_size=opts["batch"])
    elif kind == "sequential":
      kw.update(sequential=amc_jax.SequentialTest(chunk_size=opts["chunk"],
                                                  confidence=opts["confidence"],
                                                  growth=opts.get("growth", 2.0)))
    elif kind == "progressive":
      kw.update(progressive=amc_jax.ProgressiveBatching(error, start=size, factor=2,
                                                        threshold=0.1),
                chunk=max(1, steps // 4))
    loss_fn = mean_loss if kind in ("full", "fixed", "progressive") else per_example
    t0 = time.perf_counter()
    r = amc_jax.fit(tx, params, loss_fn, (xtr, ytr), **kw)
    jax.block_until_ready(r.params)
    wall += time.perf_counter() - t0
    params, state = r.params, r.opt_state
    got = float(r.history["data_passes"][-1])
    if kind == "progressive":
      size = int(r.history["batch_size"][-1])
    curve["_rate"] = got / steps
    passes += got
    segment += 1
    loss, acc = (float(v) for v in evaluate(params))
    curve["passes"].append(passes)
    curve["wall"].append(wall)
    curve["loss"].append(loss)
    curve["test_accuracy"].append(acc)
    curve["sigma"].append(float(r.history["sigma"][-1]) if kind != "adam" else float("nan"))
    curve["batch_size"].append(int(r.history["batch_size"][-1]))
  curve.pop("_rate")
  return curve


def drift(losses):
  best, worst = np.inf, 0.0
  for v in losses:
    if np.isfinite(best):
      worst = max(worst, v / best - 1.0)
    best = min(best, v)
  return worst


def summarise(runs, models, seeds, budget):
  table = {}
  for model in models:
    rows = {}
    names = sorted({r["method"] for r in runs if r["model"] == model})
    for name in names:
      passes_to, drifts, finals, walls = [], [], [], []
      for seed in seeds:
        run = next((r for r in runs if (r["model"], r["method"], r["seed"]) == (model, name, seed)),
                   None)
        if run is None:
          continue
        eps = name.split("eps=")[-1] if "eps=" in name else "0"
        ref = next((r for r in runs if (r["model"], r["method"], r["seed"])
                    == (model, f"full batch, eps={eps}", seed)), None)
        c = run["curve"]
        drifts.append(drift(c["loss"]))
        finals.append(c["test_accuracy"][-1])
        walls.append(c["wall"][-1])
        if ref is not None:
          target = ref["curve"]["test_accuracy"][-1]
          hit = [p for p, a in zip(c["passes"], c["test_accuracy"]) if a >= target]
          passes_to.append(hit[0] / ref["curve"]["passes"][-1] if hit else float("inf"))
      rows[name] = {
          "seeds": len(finals),
          "final_test_accuracy": float(np.median(finals)) if finals else None,
          "passes_to_full_batch": float(np.median(passes_to)) if passes_to else None,
          "passes_to_full_batch_per_seed": passes_to,
          "drift": float(np.max(drifts)) if drifts else None,
          "drift_per_seed": drifts,
          "wall_seconds": float(np.median(walls)) if walls else None,
      }
    table[model] = rows
  return table


def print_table(table, budget):
  for model, rows in table.items():
    print(f"\n{model}: budget {budget[model]} data passes; median over seeds")
    print(f"{'method':<26} {'test acc':>8} {'passes to full-batch acc':>25} "
          f"{'drift (max)':>11} {'wall s':>7}")
    for name, r in rows.items():
      p = r["passes_to_full_batch"]
      ptxt = "n/a" if p is None else ("never" if not np.isfinite(p) else f"{p:.3f} x budget")
      print(f"{name:<26} {r['final_test_accuracy']:>8.3f} {ptxt:>25} "
            f"{100 * r['drift']:>10.1f}% {r['wall_seconds']:>7.1f}")


def markdown(table):
  """README rows: per method (epsilon 0 / 1e-2), test accuracy, passes to
  full-batch accuracy and drift on each model."""
  names = ["full batch", "fixed 250", "fixed 1000", "progressive", "sequential 0.8",
           "sequential 0.95", "sequential 0.95 every chunk", "sequential 0.99 every chunk"]

  def cell(model, name, key, fmt):
    out = []
    for eps in ("0", "0.01"):
      r = table.get(model, {}).get(f"{name}, eps={eps}")
      v = None if r is None else r[key]
      if v is None:
        out.append("-")
      elif key == "passes_to_full_batch" and not np.isfinite(v):
        out.append("never")
      else:
        out.append(fmt(v))
    return " / ".join(out)

  rows = []
  for name in names:
    cells = []
    for model in ("mlp", "cnn"):
      cells += [cell(model, name, "final_test_accuracy", lambda v: f"{v:.3f}"),
                cell(model, name, "passes_to_full_batch", lambda v: f"{v:.2f}"),
                cell(model, name, "drift", lambda v: f"{100 * v:.1f}%")]
    rows.append(f"| {name} | " + " | ".join(cells) + " |")
  adam = [table.get(m, {}).get("adam") for m in ("mlp", "cnn")]
  if all(adam):
    cells = []
    for r in adam:
      cells += [f"{r['final_test_accuracy']:.3f}", f"{r['passes_to_full_batch']:.2f}",
                f"{100 * r['drift']:.1f}%"]
    rows.append("| Adam, lr 1e-3, batch 250 | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--train-examples", type=int, default=10000)
  parser.add_argument("--budget-mlp", type=float, default=1500.0, help="data passes")
  parser.add_argument("--budget-cnn", type=float, default=300.0, help="data passes")
  parser.add_argument("--checkpoints", type=int, default=20)
  parser.add_argument("--data-dir", type=pathlib.Path, default=None)
  parser.add_argument("--out-dir", type=pathlib.Path, default=_common.ROOT / "benchmarks" / "out")
  parser.add_argument("--fresh", action="store_true", help="ignore runs already in the JSON")
  parser.add_argument("--from-json", type=pathlib.Path, default=None,
                      help="print the tables (and the README's markdown rows) of a result")
  args = parser.parse_args(argv)
  if args.from_json is not None:
    record = json.loads(args.from_json.read_text())
    summary = summarise(record["runs"], [m for m in MODELS if m in record["summary"]],
                        sorted({r["seed"] for r in record["runs"]}), record["budget_data_passes"])
    print_table(summary, record["budget_data_passes"])
    print("\n" + markdown(summary))
    return record
  if args.quick:
    _common.quick_compile()
  import jax
  import amc_jax
  amc_jax.use_xla_cpu_workaround()
  del jax

  if args.quick:
    rng = np.random.default_rng(0)
    xtr = rng.random((400, 28, 28), np.float32); ytr = rng.integers(0, 10, 400).astype(np.int32)
    xte, yte = xtr[:100], ytr[:100]
    budget = {m: 4.0 for m in MODELS}
    seeds, checkpoints, what = [0], 2, "random images (--quick)"
  else:
    directory = _mnist.data_dir(args.data_dir)
    xi, yi = _mnist.load_mnist(directory, "train")
    xt, yt = _mnist.load_mnist(directory, "test")
    xtr = (xi[: args.train_examples] / 255.0).astype(np.float32)
    ytr = yi[: args.train_examples].astype(np.int32)
    xte, yte = (xt / 255.0).astype(np.float32), yt.astype(np.int32)
    budget = {"mlp": args.budget_mlp, "cnn": args.budget_cnn}
    seeds, checkpoints = list(range(args.seeds)), args.checkpoints
    what = f"Fashion-MNIST ({directory}): first {len(xtr)} training images, {len(xte)} test images"
  data = (xtr, ytr, xte, yte)

  out = args.out_dir / ("minibatch_quick.json" if args.quick else "minibatch.json")
  runs = []
  if out.exists() and not args.fresh:
    runs = json.loads(out.read_text()).get("runs", [])
  done = {(r["model"], r["method"], r["seed"]) for r in runs}
  record = lambda: {
      "command": _common.command(), "data": what, "budget_data_passes": budget,
      "settings": {"sigma0": SIGMA0, "n_reset": N_RESET, "epsilons": list(EPSILONS),
                   "adam_lr": 1e-3, "loss": "softmax cross-entropy", "init": "flax default"},
      "summary": summarise(runs, args.models, seeds, budget), "runs": runs}
  for model in args.models:
    for seed in seeds:
      for method in methods(args.quick):
        if (model, method[0], seed) in done:
          continue
        t0 = time.perf_counter()
        curve = run_one(model, method, seed, data, budget[model], checkpoints)
        runs.append({"model": model, "method": method[0], "seed": seed,
                     "curve": _common.jsonable(curve, 5)})
        print(f"{model} seed {seed} {method[0]:<26} test acc {curve['test_accuracy'][-1]:.3f}"
              f" loss {curve['loss'][-1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        _common.write_json(out, record())
  result = record()
  _common.write_json(out, result)
  print_table(result["summary"], budget)
  return result


if __name__ == "__main__":
  main()
