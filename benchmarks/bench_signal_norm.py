"""Signal norm (Section III B of Whitelam et al. 2022): what it costs, what it buys.

Two parts, chosen with ``--part`` (default: both):

``cost``
  Time per aMC step with signal norm on against off, same model, data and
  hyperparameters, measured in one run with the repeats of the two variants
  interleaved (so they share the load of a shared machine); each is the
  median over ``--repeats`` after a warm-up compile. A variant is one jitted
  ``lax.scan`` of ``tx.update`` + ``optax.apply_updates`` in batch mode (one
  loss evaluation per step) with the data passed as arguments of the jitted
  function: closed-over data would be a constant, and constants stop XLA from
  hoisting loop-invariant work (the first layer's sum of squared inputs) out
  of the loop. Models:

  1. the 784-16-16-10 tanh MLP with softmax outputs and MSE against one-hot
     labels on the Fashion-MNIST training images (``--mlp-examples``, all 60000
     by default; random data of the same shape when the IDX files are absent,
     recorded in the JSON), full batch;
  2. the deep narrow net of the effect part, depth ``--cost-depth`` (32), on
     1000 points.

  The issue's target is on / off <= 1.15. ``--no-xla-workaround`` skips
  ``amc_jax.use_xla_cpu_workaround()``: its flag turns off XLA:CPU's fused
  reductions, which signal norm's sums of squares pay for (the JSON records
  which). A third, diagnostic variant runs the signal-norm step with the
  lambdas fixed to 1 (``value_fn`` returns ones): the step's own share of the
  cost, without the statistics of Eq. (17). After timing, the loss cached in
  each final state is checked against a float64 NumPy forward pass of the
  final params.

``effect`` (Fig. 6 of the paper)
  Deep narrow tanh nets, input 1 -> (d - 2) x [Dense(4), tanh] -> Dense(10),
  tanh -> Dense(1), every weight and bias drawn from N(0, 1e-4) (std 1e-2), on
  1000 points theta = i / 1000 with target f0 = 0.5 for 0.5 < theta < 0.75,
  else 0, and MSE loss. The best constant ("learned nothing") has MSE =
  Var(f0) = 0.04675. Methods, each for ``--steps`` loss evaluations (a batch
  mode aMC step evaluates the loss once; an Adam step, a forward and a
  backward pass, is counted as one evaluation too): aMC with signal norm on
  and off (sigma0 = 1e-2, epsilon = 1e-2, n_reset = 100) and Adam: lr 1e-3
  (``--adam-lrs``) at every depth, and lr 1e-2 and 1e-4 (``--adam-extra-lrs``)
  at depth 64 only (``--adam-extra-depths``). The full run (30000 evaluations,
  4 seeds) took 31 minutes on 2 busy CPU cores, 7.5 of them for those two
  extra learning rates (``--adam-extra-lrs`` with no values skips them).
  ``--seeds`` chains per method run vmapped in one ``amc_jax.fit``; they
  differ by their init (the same inits for every method) and by aMC's
  per-chain keys. The paper's claim: at depth 64 aMC with signal norm trains,
  the others do not.

  python -m benchmarks.bench_signal_norm [--part cost|effect|all] [--no-xla-workaround]

Prints tables and writes JSON (with the machine described) to
``benchmarks/results/bench_signal_norm_cost.json`` and
``bench_signal_norm_effect.json`` (``_noworkaround`` before ``.json`` without
the workaround), and the effect plot ``bench_signal_norm_effect.png``, in
``--out-dir``. ``--plot-from FILE.json`` only redraws the plot of an effect
JSON (as ``FILE.png``). A tiny configuration for the tests:

  python -m benchmarks.bench_signal_norm --steps 200 --repeats 1 --depths 4 \\
      --seeds 2 --mlp-examples 500 --mlp-scan-steps 2 --deep-scan-steps 20 \\
      --cost-depth 4 --adam-lrs 1e-3 --no-plot --out-dir /tmp/x
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import amc_jax

from benchmarks import _common
from benchmarks import _mnist

N_POINTS = 1000  # points of the deep-net problem
SIGMA0, EPSILON, N_RESET = 1e-2, 1e-2, 100
INIT_STD = 1e-2
INIT_DESCRIPTION = (
    "every kernel and bias ~ N(0, 1e-4), i.e. std 1e-2"
    " (flax nn.initializers.normal(1e-2) for kernels and biases)"
)


# ---------------------------------------------------------------------------
# Models, with a float64 NumPy forward pass to check the losses against.
# ---------------------------------------------------------------------------


class MLP(nn.Module):
  """784-16-16-10, tanh hidden units, softmax outputs (flax default init)."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(16)(x))
    x = jnp.tanh(nn.Dense(16)(x))
    return nn.softmax(nn.Dense(10)(x))


class DeepNarrow(nn.Module):
  """1 -> (depth - 2) x [Dense(4), tanh] -> Dense(10), tanh -> Dense(1)."""

  depth: int

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(INIT_STD)
    dense = lambda n: nn.Dense(n, kernel_init=init, bias_init=init)
    for _ in range(self.depth - 2):
      x = jnp.tanh(dense(4)(x))
    x = jnp.tanh(dense(10)(x))
    return dense(1)(x)[:, 0]


def mse(out, target):
  """Mean over examples of the squared error summed over outputs."""
  err = (out - target) ** 2
  return jnp.mean(jnp.sum(err, axis=-1) if err.ndim > 1 else err)


def numpy_loss(params, x, target, softmax):
  """The loss of MLP or DeepNarrow in float64 NumPy (layers Dense_0, Dense_1, ...)."""
  h = np.asarray(x, np.float64)
  n = len(params)
  for i in range(n):
    layer = params[f"Dense_{i}"]
    h = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
    if i < n - 1:
      h = np.tanh(h)
  if softmax:
    h = np.exp(h - h.max(-1, keepdims=True))
    h /= h.sum(-1, keepdims=True)
  else:
    h = h[:, 0]
  err = (h - np.asarray(target, np.float64)) ** 2
  return float(np.mean(err.sum(-1) if err.ndim > 1 else err))


def deep_problem(n=N_POINTS):
  """theta = i / n, f0 = 0.5 on (0.5, 0.75), else 0."""
  theta = jnp.arange(n, dtype=jnp.float32) / n
  target = jnp.where((theta > 0.5) & (theta < 0.75), 0.5, 0.0).astype(jnp.float32)
  return theta[:, None], target


# ---------------------------------------------------------------------------
# Fashion-MNIST from its IDX files.
# ---------------------------------------------------------------------------


def fashion_mnist(n):
  """(x [n, 784] in [0, 1], one-hot [n, 10], description of the data)."""
  x, y, what = _mnist.training_images(_mnist.data_dir(None), n)
  return jnp.asarray(x), jnp.asarray(np.eye(10, dtype=np.float32)[y]), what


# ---------------------------------------------------------------------------
# Part 1: cost.
# ---------------------------------------------------------------------------


def scan_amc(tx, value_fn, n_steps):
  """Jitted lax.scan of tx.update; the data are arguments, never constants."""

  def run(params, state, x, y):
    def body(carry, _):
      params, state = carry
      updates, state = tx.update(None, state, params, value_fn=lambda p: value_fn(p, x, y))
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), None, length=n_steps)[0]

  return jax.jit(run)


def median_seconds(fns, repeats):
  """(medians, samples) of each callable (see _common.interleaved_times)."""
  return _common.interleaved_times(fns, repeats)


def cost_of(model, x, y, n_steps, repeats, softmax):
  """us/step of aMC with signal norm on and off on one model and data set."""
  params = model.init(jax.random.key(0), x[:1])["params"]
  plain = lambda p, x, y: mse(model.apply({"params": p}, x), y)
  variants = {
      "on": (amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=True, seed=0),
             amc_jax.signal_norm_value_fn(model, mse)),
      "off": (amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=False, seed=0), plain),
      # Diagnostic: the signal-norm step with lambdas fixed to 1, i.e. the
      # step's own extra work (scales in the state, the scaled move) without
      # the statistics of Eq. (17).
      "on, lambdas = 1": (
          amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=True, seed=0),
          lambda p, x, y: (plain(p, x, y), jax.tree_util.tree_map(jnp.ones_like, p)),
      ),
  }
  fns, runs = {}, {}
  for name, (tx, value_fn) in variants.items():
    run = scan_amc(tx, value_fn, n_steps)
    # The first step evaluates U(x) too: time from a state past it.
    start = run(params, tx.init(params), x, y)
    runs[name] = (run, start)
    fns[name] = lambda run=run, start=start: run(*start, x, y)
  medians, samples = median_seconds(fns, repeats)
  us = {k: v / n_steps * 1e6 for k, v in medians.items()}
  # The minimum is the least load-sensitive figure on a busy machine.
  us_min = {k: min(v) / n_steps * 1e6 for k, v in samples.items()}
  check = {}
  for name, (run, start) in runs.items():
    p, state = run(*start, x, y)
    ref = numpy_loss(p, x, y, softmax)
    check[name] = {
        "cached_loss": float(state.loss),
        "numpy_float64_loss": ref,
        "rel_err": abs(float(state.loss) - ref) / max(abs(ref), 1e-30),
        "accepted_fraction": float(state.n_accept) / float(state.count),
    }
  return {
      "n_params": int(sum(v.size for v in jax.tree_util.tree_leaves(params))),
      "steps_per_scan": n_steps,
      "us_per_step": us,
      "ratio_on_off": us["on"] / us["off"],
      "ratio_on_lambdas_1_off": us["on, lambdas = 1"] / us["off"],
      "min_us_per_step": us_min,
      "ratio_on_off_of_minima": us_min["on"] / us_min["off"],
      "samples_s": samples,
      "loss_check": check,
  }


def part_cost(args, argv, suffix, workaround):
  load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
  x, y, what = fashion_mnist(args.mlp_examples)
  theta, target = deep_problem()
  rows = {}
  t0 = time.perf_counter()
  rows["mlp"] = {
      "model": "784-16-16-10 tanh MLP, softmax outputs, MSE vs one-hot, flax default init",
      "data": what,
      "examples": int(x.shape[0]),
      **cost_of(MLP(), x, y, args.mlp_scan_steps, args.repeats, softmax=True),
  }
  rows["deep"] = {
      "model": f"deep narrow tanh net, depth {args.cost_depth}, init std {INIT_STD}",
      "data": f"{N_POINTS} points, the step function of the effect part",
      "examples": N_POINTS,
      **cost_of(DeepNarrow(args.cost_depth), theta, target, args.deep_scan_steps,
                args.repeats, softmax=False),
  }
  wall = time.perf_counter() - t0

  print(f"aMC (sigma0={SIGMA0}, epsilon={EPSILON}, n_reset={N_RESET}), batch mode,"
        f" median of {args.repeats}, XLA:CPU workaround {'on' if workaround else 'off'}")
  print(f"{'model':44s} {'steps':>6s} {'on us/step':>11s} {'off us/step':>12s} {'on/off':>7s}"
        f" {'lambdas=1':>10s} {'/off':>6s} {'on/off(min)':>11s} {'loss check':>10s}")
  names = {"mlp": f"MLP 784-16-16-10, {x.shape[0]} examples",
           "deep": f"deep narrow net, depth {args.cost_depth}, {N_POINTS} points"}
  for k, r in rows.items():
    err = max(c["rel_err"] for c in r["loss_check"].values())
    print(f"{names[k]:44s} {r['steps_per_scan']:6d} {r['us_per_step']['on']:11.1f}"
          f" {r['us_per_step']['off']:12.1f} {r['ratio_on_off']:7.3f}"
          f" {r['us_per_step']['on, lambdas = 1']:10.1f} {r['ratio_on_lambdas_1_off']:6.3f}"
          f" {r['ratio_on_off_of_minima']:11.3f} {err:10.1e}")
  print("lambdas=1: the signal-norm step with value_fn returning ones for the lambdas"
        " (the step's share of the cost, without the statistics of Eq. 17)")
  print("on/off(min): ratio of the fastest repeats, the least load-sensitive figure")
  print("loss check: max relative error of the cached losses against float64 NumPy")
  print(f"target: on/off <= 1.15; data: {what}; wall {wall:.1f} s")
  result = {
      "command": "python -m benchmarks.bench_signal_norm " + " ".join(argv),
      "part": "cost",
      "xla_cpu_workaround": workaround,
      "amc": {"sigma0": SIGMA0, "epsilon": EPSILON, "n_reset": N_RESET, "mode": "batch"},
      "repeats": args.repeats,
      "target_ratio_on_off": 1.15,
      "models": rows,
      "wall_s": wall,
      "load_average_before": list(load_before) if load_before else None,
  }
  _common.write_json(pathlib.Path(args.out_dir) / f"bench_signal_norm_cost{suffix}.json", result)
  return result


# ---------------------------------------------------------------------------
# Part 2: effect (Fig. 6).
# ---------------------------------------------------------------------------


def methods(adam_lrs, seed):
  """aMC with signal norm on and off, then Adam at each learning rate."""
  out = {
      "aMC, signal norm on": amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=True, seed=seed),
      "aMC, signal norm off": amc_jax.amc(SIGMA0, EPSILON, N_RESET, signal_norm=False, seed=seed),
  }
  for lr in adam_lrs:
    out[f"Adam, lr {lr:g}"] = optax.adam(lr)
  return out


def log_interval(steps, chunk, wanted):
  return math.gcd(math.gcd(min(wanted, max(1, steps // 10)), chunk), steps)


def part_effect(args, argv, suffix, workaround):
  load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
  theta, target = deep_problem()
  data = (theta, target)
  baseline = float(jnp.var(target))
  threshold = 0.9 * baseline
  chunk = min(1000, args.steps)
  log_every = log_interval(args.steps, chunk, args.log_every)
  txs = methods(args.adam_lrs, args.seed)
  extra = {k: v for k, v in methods(args.adam_extra_lrs, args.seed).items()
           if k.startswith("Adam") and k not in txs}
  print(f"deep narrow tanh nets on {N_POINTS} points, {args.steps} loss evaluations per"
        f" method, {args.seeds} seeds; best constant (baseline) MSE = {baseline:.5f}")
  by_depth, walls = {}, {}
  t_all = time.perf_counter()
  for depth in args.depths:
    model = DeepNarrow(depth)
    init = lambda key, model=model: model.init(key, theta[:1])["params"]
    plain = lambda p, b, model=model: mse(model.apply({"params": p}, b[0]), b[1])
    sn = amc_jax.signal_norm_value_fn(model, mse)
    sn_loss = lambda p, b, sn=sn: sn(p, *b)
    final_loss = jax.jit(jax.vmap(lambda p: plain(p, data)))
    rows, t_depth = {}, time.perf_counter()
    depth_txs = {**txs, **(extra if depth in args.adam_extra_depths else {})}
    for name, tx in depth_txs.items():
      loss_fn = sn_loss if "signal norm on" in name else plain
      t0 = time.perf_counter()
      result = amc_jax.fit(
          tx, init, loss_fn, data, steps=args.steps, n_chains=args.seeds, chunk=chunk,
          log_every=log_every, progress=False, key=args.seed,
      )
      final = np.asarray(final_loss(result.params), np.float64)
      wall = time.perf_counter() - t0
      history = np.asarray(result.history["loss"], np.float64)  # [rows, seeds]
      rows[name] = {
          "final_loss": final.tolist(),
          "median": float(np.median(final)),
          "best": float(np.min(final)),
          "below_0.9_baseline": int(np.sum(final < threshold)),
          "wall_s": wall,
          "history_loss": history.T.tolist(),
          "final_acceptance": (np.asarray(result.history["acceptance"])[-1].tolist()
                               if "aMC" in name else None),
          "final_sigma": (np.asarray(result.history["sigma"])[-1].tolist()
                          if "aMC" in name else None),
      }
      print(f"  depth {depth:3d}  {name:22s} median {rows[name]['median']:.3e}"
            f"  best {rows[name]['best']:.3e}  below 0.9 x baseline"
            f" {rows[name]['below_0.9_baseline']}/{args.seeds}  {wall:7.1f} s", flush=True)
    walls[depth] = time.perf_counter() - t_depth
    by_depth[depth] = {
        "n_params": int(sum(v.size for v in jax.tree_util.tree_leaves(init(jax.random.key(0))))),
        "methods": rows,
        "wall_s": walls[depth],
    }
    print(f"  depth {depth}: {walls[depth]:.1f} s", flush=True)
  total = time.perf_counter() - t_all
  steps_logged = (np.arange(args.steps // log_every) + 1) * log_every

  print(f"\nfinal MSE after {args.steps} loss evaluations, {args.seeds} seeds"
        f" (baseline {baseline:.5f}; 'below' = final < 0.9 x baseline)")
  print(f"{'depth':>5s} {'method':22s} {'median':>10s} {'best':>10s} {'below':>6s} {'wall s':>7s}")
  for depth, d in by_depth.items():
    for name, r in d["methods"].items():
      print(f"{depth:5d} {name:22s} {r['median']:10.3e} {r['best']:10.3e}"
            f" {r['below_0.9_baseline']:3d}/{args.seeds:<2d} {r['wall_s']:7.1f}")
  print("wall per depth: " + ", ".join(f"{d}: {w:.1f} s" for d, w in walls.items())
        + f"; total {total:.1f} s")

  out_dir = pathlib.Path(args.out_dir)
  png = out_dir / f"bench_signal_norm_effect{suffix}.png"
  plotted = plot(by_depth, steps_logged, baseline, png) if not args.no_plot else False
  result = {
      "command": "python -m benchmarks.bench_signal_norm " + " ".join(argv),
      "part": "effect",
      "xla_cpu_workaround": workaround,
      "problem": (f"{N_POINTS} points theta = i/{N_POINTS}, f0 = 0.5 for 0.5 < theta < 0.75"
                  " else 0, MSE; nets 1 -> (d-2) x [Dense(4), tanh] -> Dense(10), tanh ->"
                  " Dense(1)"),
      "init": INIT_DESCRIPTION,
      "baseline_mse_best_constant": baseline,
      "below_threshold": threshold,
      "amc": {"sigma0": SIGMA0, "epsilon": EPSILON, "n_reset": N_RESET, "mode": "batch",
              "seed": args.seed},
      "adam_lrs": args.adam_lrs,
      "adam_extra_lrs": args.adam_extra_lrs,
      "adam_extra_depths": args.adam_extra_depths,
      "evaluations": (f"{args.steps} steps per method; a batch-mode aMC step is one loss"
                      " evaluation (plus one at the start), an Adam step (forward + backward)"
                      " is counted as one evaluation"),
      "steps": args.steps,
      "seeds": args.seeds,
      "seeds_how": ("amc_jax.fit(n_chains=seeds) with params = init(key): chains differ by"
                    " init (the same inits for every method) and by aMC's per-chain keys"),
      "final_loss_how": "plain MSE of the final params of each chain, evaluated after fit",
      "log_every": log_every,
      "history_steps": steps_logged.tolist(),
      "history_how": ("fit's history['loss'] per seed: aMC the current loss after the row's"
                      " last step, Adam the loss at the row's last step"),
      "depths": {str(d): v for d, v in by_depth.items()},
      "wall_s_per_depth": {str(d): w for d, w in walls.items()},
      "wall_s_total": total,
      "plot": str(png) if plotted else None,
      "load_average_before": list(load_before) if load_before else None,
  }
  _common.write_json(out_dir / f"bench_signal_norm_effect{suffix}.json", result)
  return result


def plot(by_depth, steps, baseline, path):
  """One panel per depth: loss vs loss evaluations, log y, baseline dashed.

  Runs that learn nothing sit on the dashed line, hidden by it and by each
  other, so each panel also lists how many seeds of each method ended below
  0.9 x baseline.
  """
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("matplotlib is not importable: no plot")
    return False
  n = len(by_depth)
  fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4.0), sharey=True, squeeze=False)
  names = list(dict.fromkeys(m for d in by_depth.values() for m in d["methods"]))
  palette = ["C3", "C0", "C2", "C1", "C4", "C5", "C6", "C7"]
  colors = {m: palette[i % len(palette)] for i, m in enumerate(names)}
  for ax, (depth, d) in zip(axes[0], by_depth.items()):
    for name, r in d["methods"].items():
      color = colors[name]
      for i, hist in enumerate(r["history_loss"]):
        ax.plot(steps, hist, color=color, lw=1, alpha=0.8, label=name if i == 0 else None)
    ax.axhline(baseline, color="k", ls="--", lw=0.8, zorder=3,
               label=f"best constant {baseline:.4f}")
    short = lambda name: (name.replace("aMC, signal norm ", "SN ")
                          .replace("Adam, lr ", "Adam "))
    counts = lambda amc: ", ".join(
        f"{short(name)} {r['below_0.9_baseline']}/{len(r['final_loss'])}"
        for name, r in d["methods"].items() if name.startswith("aMC") == amc
    )
    ax.set_yscale("log")
    ax.set_title(f"depth {depth}; seeds below 0.9 x baseline:\n{counts(True)}\n{counts(False)}",
                 fontsize=8)
    ax.set_xlabel("loss evaluations")
  axes[0][0].set_ylabel("MSE")
  handles = {}
  for ax in axes[0]:
    for h, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, h)
  axes[0][0].legend(handles.values(), handles.keys(), fontsize=7, loc="lower left")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  print(f"wrote {path}")
  return True


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--part", choices=["cost", "effect", "all"], default="all")
  parser.add_argument("--no-xla-workaround", action="store_true",
                      help="skip amc_jax.use_xla_cpu_workaround() (outputs get _noworkaround)")
  parser.add_argument("--out-dir", default=str(pathlib.Path(__file__).parent / "out"))
  cost = parser.add_argument_group("cost")
  cost.add_argument("--repeats", type=int, default=11)
  cost.add_argument("--mlp-examples", type=int, default=60_000)
  cost.add_argument("--mlp-scan-steps", type=int, default=20,
                    help="steps per timed scan, MLP (full batch)")
  cost.add_argument("--deep-scan-steps", type=int, default=2000,
                    help="steps per timed scan, deep narrow net")
  cost.add_argument("--cost-depth", type=int, default=32)
  effect = parser.add_argument_group("effect")
  effect.add_argument("--steps", type=int, default=30_000, help="loss evaluations per method")
  effect.add_argument("--depths", type=int, nargs="+", default=[4, 16, 32, 64])
  effect.add_argument("--seeds", type=int, default=4)
  effect.add_argument("--seed", type=int, default=0, help="fit key and aMC seed")
  effect.add_argument("--adam-lrs", type=float, nargs="+", default=[1e-3],
                      help="Adam learning rates run at every depth")
  effect.add_argument("--adam-extra-lrs", type=float, nargs="*", default=[1e-2, 1e-4],
                      help="more Adam learning rates, run at --adam-extra-depths only")
  effect.add_argument("--adam-extra-depths", type=int, nargs="*", default=[64])
  effect.add_argument("--log-every", type=int, default=200)
  effect.add_argument("--no-plot", action="store_true")
  effect.add_argument("--plot-from", metavar="JSON",
                      help="only redraw the PNG (beside JSON) from an effect JSON; runs nothing")
  args = parser.parse_args(argv)
  if args.plot_from:
    record = json.loads(pathlib.Path(args.plot_from).read_text())
    plot({int(d): v for d, v in record["depths"].items()}, record["history_steps"],
         record["baseline_mse_best_constant"], pathlib.Path(args.plot_from).with_suffix(".png"))
    return {}
  workaround = not args.no_xla_workaround
  if workaround:
    amc_jax.use_xla_cpu_workaround()  # before the first computation
  argv = sys.argv[1:] if argv is None else argv
  suffix = "" if workaround else "_noworkaround"
  out = {}
  if args.part in ("cost", "all"):
    out["cost"] = part_cost(args, argv, suffix, workaround)
  if args.part in ("effect", "all"):
    out["effect"] = part_effect(args, argv, suffix, workaround)
  return out


if __name__ == "__main__":
  main()
