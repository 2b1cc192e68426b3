"""aMC against evosax's OpenAI-ES and CMA-ES: loss per loss evaluation and per second.

The problem is ``_problems.sine_problem()``: the paper's sine net (1-30-1
tanh, 90 params, 1000 points, MSE, float32), all methods starting from the
same params. Every method gets the same budget of loss evaluations:

- aMC: ``amc_jax.amc(1e-2, epsilon=0.1, n_reset=100, seed=s)`` in batch mode,
  one loss evaluation per step (plus one for the initial U(x)). At zero
  temperature aMC accepts only moves that do not raise the loss, so its
  current loss is its best-so-far loss.
- evosax ``Open_ES`` and ``CMA_ES`` (evosax >= 0.3 API) at each population
  size P: ``budget // P`` generations of ask / ``jax.vmap(loss)`` over the
  population / tell, P loss evaluations each. Hyperparameters are the
  library's defaults (OpenAI-ES: antithetic sampling, centred-rank fitness
  shaping, ``optax.sgd(1e-3)``, constant std 1.0; CMA-ES: Hansen's default
  weights and learning rates, ``std_init`` 1.0), plus one OpenAI-ES variant
  with its scales set to the problem's (``optax.adam(1e-2)``, std 1e-2; not
  tuned beyond that), since the defaults barely move on this net.

Each method runs as one jitted ``lax.fori_loop`` over steps (generations) with
a dynamic trip count, called once per logging row (rows are log-spaced in
evaluations); the wall time is the sum of those calls, each blocked on, after a
warm-up call that compiles (so compilation is excluded). The loss of the
distribution mean (evosax ``state.mean``) is evaluated between rows, outside
the timer and the budget. Seeds run round-robin over methods, so all methods
share the load of a shared machine; times are medians over seeds.

evosax's CMA-ES runs a LAPACK ``eigh`` of the 90 x 90 covariance every
generation (on CPU, scipy's OpenBLAS). Multi-threaded OpenBLAS becomes 10-50x
slower when other jobs load the cores, so the script sets
``OPENBLAS_NUM_THREADS=1`` (``--blas-threads``) before the first computation;
it touches nothing else (XLA's own ops do not use OpenBLAS).

  python -m benchmarks.studies.evosax [--evaluations 200000] [--seeds 3]
      [--popsizes 16 64] [--rows 60] [--no-plot] [--out FILE]

Prints a table and writes JSON (with the machine described) to
``benchmarks/results/bench_evosax.json`` and a plot (loss vs evaluations and
vs wall seconds, best-so-far loss, log axes) beside it as ``.png``. Needs the
optional ``evosax`` package: without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
import optax

import amc_jax

from benchmarks import _common
from benchmarks import _evosax
from benchmarks import _problems
from benchmarks._evosax import evosax_method, row_ends

NO_EVOSAX = "evosax is not installed (pip install evosax>=0.3): nothing to compare against; skipping bench_evosax."


def amc_method(loss, params):
  make_tx = lambda seed: amc_jax.amc(1e-2, epsilon=0.1, n_reset=100, seed=seed)
  tx = make_tx(0)  # the seed only enters tx.init: one compiled update for all seeds

  def body(_, carry):
    params, state = carry
    updates, state = tx.update(None, state, params, value_fn=loss)
    return optax.apply_updates(params, updates), state

  advance = jax.jit(lambda carry, n: jax.lax.fori_loop(0, n, body, carry))
  return {
      "init": lambda seed: (params, make_tx(seed).init(params)),
      "advance": advance,
      "best": lambda carry: carry[1].loss,
      "std": lambda carry: carry[1].sigma,
      "mean_loss": None,
  }


def run_one(method, seed, ends):
  """Runs one method to the end of every row; returns its curves and wall time."""
  carry = method["init"](seed)
  seconds, best, mean = [], [], []
  for carry, elapsed in _evosax.timed_rows(method["advance"], carry, ends):
    seconds.append(elapsed)
    best.append(float(method["best"](carry)))
    if method["mean_loss"] is not None:
      mean.append(float(method["mean_loss"](carry)))
  return {"seconds": seconds, "best_loss": best, "mean_loss": mean or None,
          "final_std": float(method["std"](carry))}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--evaluations", type=int, default=200_000,
                      help="loss evaluations per method and seed")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--popsizes", type=int, nargs="+", default=[16, 64],
                      help="evosax population sizes (even: OpenAI-ES samples antithetic pairs)")
  parser.add_argument("--rows", type=int, default=60, help="log-spaced logging rows")
  parser.add_argument("--scaled-openes-lr", type=float, default=1e-2)
  parser.add_argument("--scaled-openes-std", type=float, default=1e-2)
  parser.add_argument("--no-scaled-openes", action="store_true",
                      help="run OpenAI-ES with the library defaults only")
  parser.add_argument("--blas-threads", type=int, default=1,
                      help="OPENBLAS_NUM_THREADS for the LAPACK eigh of CMA-ES (0: leave the"
                           " environment alone); multi-threaded OpenBLAS slows down by 10-50x"
                           " on a loaded machine")
  parser.add_argument("--no-plot", action="store_true")
  parser.add_argument(
      "--out", default=str(_common.OUT / "bench_evosax.json")
  )
  args = parser.parse_args(argv)
  argv = sys.argv[1:] if argv is None else argv
  workaround = amc_jax.use_xla_cpu_workaround()  # before the first computation
  if args.blas_threads > 0:  # read when the first eigh loads scipy's OpenBLAS
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
  try:
    import evosax  # pylint: disable=import-outside-toplevel
    from evosax.algorithms import CMA_ES, Open_ES  # pylint: disable=import-outside-toplevel
  except ImportError:
    print(NO_EVOSAX)
    return None
  if any(p < 2 or p % 2 for p in args.popsizes):
    parser.error("--popsizes must be even and >= 2 (OpenAI-ES samples antithetic pairs)")
  evosax_version = importlib.metadata.version("evosax")

  params, loss = _problems.sine_problem()
  specs = {"aMC": dict(kind="amc", popsize=1, hyperparameters={
      "sigma0": 1e-2, "epsilon": 0.1, "n_reset": 100, "sigma_decay": 0.95,
      "temperature": 0.0, "mode": "batch"})}
  for p in args.popsizes:
    specs[f"OpenAI-ES defaults, P={p}"] = dict(
        kind="open_es", popsize=p, make=lambda p=p: Open_ES(p, params),
        hyperparameters={"optimizer": "optax.sgd(1e-3)", "std": 1.0,
                         "antithetic": True, "fitness_shaping": "centered ranks"})
    if not args.no_scaled_openes:
      lr, std = args.scaled_openes_lr, args.scaled_openes_std
      specs[f"OpenAI-ES adam {lr:g}, std {std:g}, P={p}"] = dict(
          kind="open_es", popsize=p,
          make=lambda p=p, lr=lr, std=std: Open_ES(
              p, params, optimizer=optax.adam(lr), std_schedule=optax.constant_schedule(std)),
          hyperparameters={"optimizer": f"optax.adam({lr:g})", "std": std,
                           "antithetic": True, "fitness_shaping": "centered ranks"})
    specs[f"CMA-ES defaults, P={p}"] = dict(
        kind="cma_es", popsize=p, make=lambda p=p: CMA_ES(p, params), hyperparameters=None)

  def make(spec):
    if spec["kind"] == "amc":
      return amc_method(loss, params)
    return evosax_method(spec["es"], spec["es"].default_params, loss, params)

  for spec in specs.values():
    spec["generations"] = max(1, args.evaluations // spec["popsize"])
    spec["ends"] = row_ends(spec["generations"], args.rows)
    if spec["kind"] != "amc":
      spec["es"] = spec.pop("make")()
      if spec["hyperparameters"] is None:  # CMA-ES: the default params, as numbers
        dp = spec["es"].default_params
        spec["hyperparameters"] = {
            k: float(getattr(dp, k)) for k in
            ("std_init", "std_min", "std_max", "mu_eff", "c_mean", "c_std", "d_std",
             "c_c", "c_1", "c_mu")
        } | {"elite_ratio": spec["es"].elite_ratio, "negative_weights": True}

  # Compile (and warm up) every method once, on a throwaway run of one step.
  compile_s, methods = {}, {}
  for name, spec in specs.items():
    t0 = time.perf_counter()
    m = methods[name] = make(spec)
    carry = jax.block_until_ready(m["advance"](m["init"](0), 1))
    if m["mean_loss"] is not None:
      jax.block_until_ready(m["mean_loss"](carry))
    compile_s[name] = time.perf_counter() - t0

  runs = {name: [] for name in specs}
  for seed in range(args.seeds):  # round-robin: every method sees the same load
    for name, spec in specs.items():
      runs[name].append(run_one(methods[name], seed, spec["ends"]))
      r = runs[name][-1]
      print(f"  seed {seed} {name}: best {r['best_loss'][-1]:.3g} in {r['seconds'][-1]:.1f} s",
            flush=True)

  out_methods = {}
  for name, spec in specs.items():
    rs = runs[name]
    p = spec["popsize"]
    evaluations = [e * p for e in spec["ends"]]
    wall = [r["seconds"][-1] for r in rs]
    finals = [r["best_loss"][-1] for r in rs]
    mean_finals = [r["mean_loss"][-1] for r in rs] if rs[0]["mean_loss"] else None
    out_methods[name] = {
        "kind": spec["kind"],
        "popsize": p,
        "hyperparameters": spec["hyperparameters"],
        "generations": spec["generations"],
        "evaluations": evaluations[-1],
        "final_best_loss": finals,
        "final_mean_loss": mean_finals,
        "median_final_best_loss": statistics.median(finals),
        "median_final_mean_loss": statistics.median(mean_finals) if mean_finals else None,
        "final_std": [r["final_std"] for r in rs],  # aMC sigma, evosax state.std
        "wall_s": wall,
        "median_wall_s": statistics.median(wall),
        "evaluations_per_s": evaluations[-1] / statistics.median(wall),
        "compile_and_warmup_s": compile_s[name],
        "curves": {
            "evaluations": evaluations,
            "best_loss": [r["best_loss"] for r in rs],
            "mean_loss": [r["mean_loss"] for r in rs] if mean_finals else None,
            "seconds": [r["seconds"] for r in rs],
        },
    }

  print(f"sine net 1-{_problems.HIDDEN}-1 tanh, {_problems.N_POINTS} points,"
        f" {args.evaluations} loss evaluations per run, median over {args.seeds} seeds"
        f" (evosax {evosax_version})")
  print(f"{'method':36s} {'P':>3s} {'evals':>8s} {'best loss':>10s} {'mean loss':>10s}"
        f" {'wall s':>8s} {'evals/s':>9s}")
  for name, r in out_methods.items():
    mean = f"{r['median_final_mean_loss']:10.3g}" if r["median_final_mean_loss"] is not None else (
        f"{'-':>10s}")
    print(f"{name:36s} {r['popsize']:3d} {r['evaluations']:8d} {r['median_final_best_loss']:10.3g}"
          f" {mean} {r['median_wall_s']:8.2f} {r['evaluations_per_s']:9.0f}")
  print("best loss: best-so-far (aMC: current loss, the same thing at T = 0); mean loss:"
        " loss of the evosax distribution mean")

  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  png = out.with_suffix(".png")
  plotted = False if args.no_plot else plot(out_methods, png)
  result = {
      "command": "python -m benchmarks.studies.evosax " + " ".join(argv),
      "problem": (f"sine net 1-{_problems.HIDDEN}-1 tanh, {_problems.N_POINTS} points, MSE,"
                  " float32, _problems.sine_problem() (same initial params for every run)"),
      "evosax_version": evosax_version,
      "evosax_api": "evosax.algorithms.{Open_ES,CMA_ES}(population_size, solution);"
                    " init(key, mean, params); ask(key, state, params);"
                    " tell(key, population, fitness, state, params)",
      "evaluations_budget": args.evaluations,
      "seeds": args.seeds,
      "timing": ("sum of blocked jitted fori_loop calls (one per row) after a compiling"
                 " warm-up; mean-loss evaluations outside the timer; median over seeds"),
      "plotted": "best-so-far loss (median over seeds bold, seeds thin)",
      "plot": str(png) if plotted else None,
      "xla_cpu_workaround": workaround,
      "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
      "methods": out_methods,
  }
  _common.write_json(out, result)
  return result


def plot(methods, path):
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("matplotlib is not importable: no plot")
    return False
  fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, (name, r) in enumerate(methods.items()):
    c = colors[i % len(colors)]
    ev = np.asarray(r["curves"]["evaluations"])
    best = np.asarray(r["curves"]["best_loss"])
    secs = np.asarray(r["curves"]["seconds"])
    ls = "-" if r["kind"] == "amc" else ("--" if r["kind"] == "open_es" else ":")
    for s in range(best.shape[0]):
      ax_e.plot(ev, best[s], color=c, lw=0.6, alpha=0.35, ls=ls)
      ax_s.plot(secs[s], best[s], color=c, lw=0.6, alpha=0.35, ls=ls)
    ax_e.plot(ev, np.median(best, 0), color=c, lw=1.8, ls=ls, label=name)
    ax_s.plot(np.median(secs, 0), np.median(best, 0), color=c, lw=1.8, ls=ls)
  for ax, xlabel in ((ax_e, "loss evaluations"), (ax_s, "wall seconds (compile excluded)")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.grid(True, which="major", alpha=0.3)
  ax_e.set_ylabel("best-so-far MSE")
  ax_e.legend(fontsize=7)
  fig.suptitle("sine net 1-30-1: aMC vs evosax (median over seeds bold)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  print(f"wrote {path}")
  return True


if __name__ == "__main__":
  main()
