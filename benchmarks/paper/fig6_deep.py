"""Fig. 6 of Whitelam et al. (2022): signal norm lets aMC train deep narrow nets.

The experiment (once the ``effect`` part of the signal-norm benchmark, now
here; ``benchmarks/studies/signal_norm.py`` keeps the cost part): deep narrow tanh nets 1 -> (d - 2) x
[Dense(4), tanh] -> Dense(10), tanh -> Dense(1), every weight and bias from
N(0, 1e-4), fit the step function f0 = 0.5 on (0.5, 0.75) (else 0) at 1000
points with MSE loss; the best constant ("learned nothing") has MSE = Var(f0)
= 0.04675. Methods: aMC (sigma0, epsilon, n_s) = (1e-2, 1e-2, 100) with signal
norm on and off, and Adam (lr 1e-3 at every depth; 1e-2 and 1e-4 too at depth
64), 30000 loss evaluations each, 4 vmapped seeds, depths 4, 16, 32, 64.

The paper's claim (Fig. 6a, c): as depth grows beyond 4 layers, GD and aMC
with signal norm off stop learning; beyond 32 layers Adam stops too; aMC with
signal norm on keeps learning up to depth 128 (and 256). Outcomes are
stochastic (nucleation-like).

Modes:

  python -m benchmarks.paper.fig6_deep                  # full (~31 min)
  python -m benchmarks.paper.fig6_deep --quick          # depth 4, 200 steps, 2 seeds, no Adam
  python -m benchmarks.paper.fig6_deep --from-json benchmarks/results/bench_signal_norm_effect.json

``--from-json`` runs nothing: it builds paper_fig6_deep.json/png (the table of
median and best final loss per depth and method, the seeds below 0.9 x
baseline, the verdict) from an existing effect JSON, carrying over its command
and wall time. The committed paper_fig6_deep files were made that way from the
committed ``bench_signal_norm_effect.json``. A run writes that effect record
(``bench_signal_norm_effect.json``: every seed's final loss and loss curve)
beside ``paper_fig6_deep.json``; the flags ``--steps``, ``--depths``,
``--seeds``, ``--seed``, ``--adam-lrs``, ``--adam-extra-lrs``,
``--adam-extra-depths`` and ``--log-every`` change the experiment.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import amc_jax

from benchmarks import _common
from benchmarks import _problems
from benchmarks._problems import INIT_DESCRIPTION, DeepNarrow, deep_problem, mse
from benchmarks.paper import _paper

N_POINTS = _problems.DEEP_POINTS
SIGMA0, EPSILON, N_RESET = 1e-2, 1e-2, 100

NAME = "fig6_deep"
CLAIM = ("Fig. 6: deep nets of 4-unit tanh layers (+ one of 10) fit a step function;"
         " GD lr 1e-3, Adam (1e-4, 0.9, 0.999), aMC (sigma0, epsilon, n_s) = (1e-2, 1e-2, 1e2),"
         " 1e6 epochs, best of 20 runs (10 Kaiming, 10 N(0, sigma0^2) inits). Beyond depth 4,"
         " GD and aMC with signal norm off stop learning; beyond depth 32 Adam stops too (no"
         " learning rate from 10 to 1e-6 worked at depth 64); aMC with signal norm on learns at"
         " every depth shown (to 128; also 256). Training is nucleation-like.")

FULL = {"steps": 30_000, "depths": [4, 16, 32, 64], "seeds": 4, "seed": 0,
        "adam_lrs": [1e-3], "adam_extra_lrs": [1e-2, 1e-4], "adam_extra_depths": [64],
        "log_every": 200}
# Quick: aMC with signal norm on and off only (each method compiles for seconds
# on a busy 2-core machine; Adam runs through the same fit loop in fig4).
QUICK = {"steps": 200, "depths": [4], "seeds": 2, "seed": 0, "adam_lrs": [],
         "adam_extra_lrs": [], "adam_extra_depths": [], "log_every": 20}


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


def part_effect(args, suffix="", workaround=True):
  """Trains every method at every depth; writes and returns the effect record."""
  load_before = _common.load_average()
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
  plotted = plot_effect(by_depth, steps_logged, baseline, png) if not args.no_plot else False
  result = {
      "command": _common.command(),
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
      "load_average_before": load_before,
  }
  _common.write_json(out_dir / f"bench_signal_norm_effect{suffix}.json", result)
  return result


def plot_effect(by_depth, steps, baseline, path):
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


def table(effect):
  rows = {}
  for depth, d in effect["depths"].items():
    rows[depth] = {}
    for name, r in d["methods"].items():
      rows[depth][name] = {"median_final_loss": r["median"], "best_final_loss": r["best"],
                           "seeds_below_0.9_baseline": r["below_0.9_baseline"],
                           "seeds": len(r["final_loss"]), "final_loss": r["final_loss"],
                           "wall_s": r["wall_s"]}
  return rows


def verdict(effect, rows):
  depths = sorted(rows, key=int)
  deep = [d for d in depths if int(d) > 4]
  sn_on = "aMC, signal norm on"
  sn_off = "aMC, signal norm off"
  below = lambda d, m: rows[d][m]["seeds_below_0.9_baseline"]
  seeds = lambda d, m: rows[d][m]["seeds"]
  on_all = all(below(d, sn_on) > seeds(d, sn_on) / 2 for d in depths)
  off_deep_fail = all(below(d, sn_off) == 0 for d in deep) if deep else None
  adams = lambda d: [m for m in rows[d] if m.startswith("Adam")]
  adam_deep_fail = {d: all(below(d, m) == 0 for m in adams(d)) for d in deep}
  deepest = depths[-1]
  per_depth = "; ".join(
      f"depth {d}: " + ", ".join(
          f"{m.replace('aMC, signal norm ', 'SN ')} {below(d, m)}/{seeds(d, m)}"
          f" (median {rows[d][m]['median_final_loss']:.1e})" for m in rows[d])
      for d in depths)
  text = (f"seeds below 0.9 x baseline ({effect['baseline_mse_best_constant']:.5f}) after"
          f" {effect['steps']} evaluations: {per_depth}.")
  if not deep:
    return False, "NOT TESTED (no depth > 4 in this configuration; a smoke test): " + text
  ok = on_all and off_deep_fail and adam_deep_fail[deepest]
  notes = []
  adam_fails_early = [d for d in deep if int(d) <= 32 and adam_deep_fail[d]]
  if adam_fails_early:
    notes.append(f"unlike the paper, Adam (N(0, 1e-4) init only, {effect['steps']} steps"
                 f" instead of 1e6) also fails at depth {', '.join(adam_fails_early)}, where the"
                 " paper's best-of-20 Adam run (half of them Kaiming-initialised) still learned")
  notes.append("GD was not run (the paper's GD stops learning beyond depth 4); depth 128 not run")
  head = "REPRODUCED" if ok else ("PARTLY reproduced" if on_all else "NOT reproduced")
  what = (f"aMC with signal norm on trains at every depth ({', '.join(depths)}); signal norm off"
          f" and every Adam learning rate stay at the baseline at depth {deepest}"
          if ok else "see the table")
  return ok, f"{head}: {what}. " + text + " Notes: " + "; ".join(notes) + "."


def build(effect, json_path, png_path, *, plot, source=None, quick=False, wall=None):
  rows = table(effect)
  ok, text = verdict(effect, rows)
  if plot:
    plot_effect({int(d): v for d, v in effect["depths"].items()},
                           effect["history_steps"], effect["baseline_mse_best_constant"],
                           pathlib.Path(png_path))
  record = {
      "name": NAME,
      "paper": "Whitelam et al. 2022, Fig. 6",
      "claim": CLAIM,
      "config": {
          "quick": quick,
          "experiment": "the effect part of the signal-norm study (benchmarks/paper/fig6_deep.py)",
          "bench_command": effect.get("command"),
          "problem": effect["problem"], "init": effect["init"], "amc": effect["amc"],
          "adam_lrs": effect["adam_lrs"], "adam_extra_lrs": effect["adam_extra_lrs"],
          "adam_extra_depths": effect["adam_extra_depths"], "steps": effect["steps"],
          "seeds": effect["seeds"], "evaluations": effect["evaluations"],
          "baseline_mse_best_constant": effect["baseline_mse_best_constant"],
          "below_threshold": effect["below_threshold"],
          "differences_from_paper": ("30000 loss evaluations instead of 1e6 epochs; 4 seeds,"
                                     " all N(0, 1e-4) init (the paper: 10 Kaiming + 10"
                                     " N(0, sigma0^2), best shown); no GD; depths 4..64 (the"
                                     " paper: to 128)"),
      },
      "measured": {"table": rows, "wall_s_per_depth": effect.get("wall_s_per_depth")},
      "reproduced": ok,
      "verdict": text,
      "wall_s": wall if wall is not None else effect.get("wall_s_total"),
  }
  if source is not None:
    record["source"] = (f"built by --from-json from {source} (no rerun): its command"
                        f" `{effect.get('command')}`, wall {effect.get('wall_s_total'):.0f} s,"
                        f" machine as recorded there")
    record["command_of_run"] = effect.get("command")
    record["machine_of_run"] = effect.get("machine")
    record["load_average_before_run"] = effect.get("load_average_before")
  return _paper.finish(pathlib.Path(json_path), record, text)


def main(argv=None):
  p = _paper.parser(__doc__.split("\n")[0])
  p.add_argument("--from-json", type=pathlib.Path, default=None, metavar="PATH",
                 help="build the outputs from an existing effect JSON (bench_signal_norm_effect.json)")
  g = p.add_argument_group("the experiment (default: the full run; --quick: the smoke test)")
  g.add_argument("--steps", type=int, default=None, help="loss evaluations per method (30000)")
  g.add_argument("--depths", type=int, nargs="+", default=None, help="(4 16 32 64)")
  g.add_argument("--seeds", type=int, default=None, help="(4)")
  g.add_argument("--seed", type=int, default=None, help="fit key and aMC seed (0)")
  g.add_argument("--adam-lrs", type=float, nargs="*", default=None,
                 help="Adam learning rates run at every depth (1e-3)")
  g.add_argument("--adam-extra-lrs", type=float, nargs="*", default=None,
                 help="more Adam learning rates, run at --adam-extra-depths only (1e-2 1e-4)")
  g.add_argument("--adam-extra-depths", type=int, nargs="*", default=None, help="(64)")
  g.add_argument("--log-every", type=int, default=None, help="(200)")
  args = p.parse_args(argv)
  json_path, png_path = _paper.paths(args.out_dir, NAME)
  if args.from_json is not None:
    effect = json.loads(args.from_json.read_text())
    if effect.get("part") != "effect":
      p.error(f"{args.from_json} is not an effect JSON (bench_signal_norm_effect.json)")
    src = args.from_json
    try:
      src = args.from_json.resolve().relative_to(_common.ROOT)
    except ValueError:
      pass
    return build(effect, json_path, png_path, plot=not args.no_plot, source=str(src))
  timer = _paper.Timer()
  _paper.start(args, quick=False)  # the XLA:CPU workaround, before any JAX computation
  cfg = dict(QUICK if args.quick else FULL)
  cfg.update({k: getattr(args, k) for k in cfg if getattr(args, k) is not None})
  effect = part_effect(argparse.Namespace(**cfg, out_dir=args.out_dir, no_plot=True))
  return build(effect, json_path, png_path, plot=not args.no_plot, quick=args.quick,
               wall=timer())


if __name__ == "__main__":
  main()
