"""Figs. 1-3 of Whitelam et al. (2021): Metropolis chains average to gradient descent.

The problem of Section IV of "Correspondence between neuroevolution and
gradient descent": the net of Eq. (48),

    f_x(theta) = sum_{i<30} x_{3i+1} tanh(x_{3i+2} theta + x_{3i+3}),

90 parameters drawn once from N(0, 1e-4) (std 1e-2, seed 0), trained on
f0(theta) = sin(2 pi theta) at K = 1000 points theta = j / K with the loss of
Eq. (47). For every mutation scale lambda, ``amc_jax.correspondence`` runs
``--chains`` zero-temperature Metropolis chains with sigma = lambda alpha
sqrt(2 pi) (Eq. 51) from the same params, and normalized gradient descent
(Eq. 49, learning rate alpha) beside them, to a common time t = alpha t_gd =
alpha lambda t_mc, recording the ensemble mean, 25 single chains, the losses
and Delta(t) of Eq. (52) (with its finite-ensemble floor, the value Delta
would take from the M chains' spread alone).

The paper uses alpha = 1e-5 and runs to t ~ 10, i.e. 1e6 gradient steps and
1e6 / lambda Monte Carlo steps per chain: 1e10 chain-steps for lambda = 0.1
and 1000 chains, out of reach of a 2-core CPU (this one does ~1e4 chain-steps
a second). So each ``--run ALPHA T_FINAL [DTYPE]`` sets the learning rate, the
final time and the float type. The default runs are

1. alpha = 1e-5 to t = 5e-4 in float64: the paper's mutation scales at the
   start of its curves;
2. alpha = 1e-5 to t = 5e-4 in float32: the same in single precision. A move
   changes U ~ 0.5 by |grad U| sigma ~ 6e-8 here, the float32 spacing of U,
   so rounding turns many small uphill moves into "no change", which T = 0
   accepts: the acceptance rate rises from 1/2 and the drift weakens. The
   correspondence at these scales needs float64;
3. alpha = 1e-2 to t = 2 in float32, where the loss falls from 0.50 to 0.20:
   what Figs. 1-3 show, with mutations 1000 times larger than the paper's.

Writes ``benchmarks/results/bench_correspondence.json`` and one PNG per run
(``bench_correspondence_alpha<alpha>_<dtype>.png``): (a) four weights against t (25
chains grey, ensemble mean green, gradient descent black) for the smallest
lambda; (b) all 90 weights at the final time, mean against gradient descent;
(c) the loss against t (Fig. 1c); (d) one weight for every lambda (Fig. 2a);
(e) Delta(t) for every lambda (Fig. 2b); (f) the loss for every lambda
(Fig. 3). After every run the losses of the final kept chains and of gradient
descent are recomputed in float64 NumPy and the largest relative difference
is recorded (``numpy_check``): a guard against XLA:CPU miscompilation.

    python -m benchmarks.studies.correspondence              # the full run
    python -m benchmarks.studies.correspondence --quick      # a smoke test
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

from benchmarks import _common

RESULTS = _common.RESULTS
HIDDEN, K_POINTS = 30, 1000


def problem(k_points: int, dtype):
  import jax.numpy as jnp

  theta = np.arange(k_points, dtype=np.float64) / k_points
  target = np.sin(2 * np.pi * theta)

  def loss(x, data):
    th, f = data
    w = x.reshape(HIDDEN, 3)  # columns: x_{3i+1} (out), x_{3i+2} (in), x_{3i+3} (bias)
    out = jnp.sum(w[None, :, 0] * jnp.tanh(th[:, None] * w[None, :, 1] + w[None, :, 2]), axis=1)
    return jnp.mean((out - f) ** 2)

  def numpy_loss(x):
    w = np.asarray(x, np.float64).reshape(-1, HIDDEN, 3)
    out = np.einsum("ck,cpk->cp", w[:, :, 0], np.tanh(theta[None, :, None] * w[:, None, :, 1] + w[:, None, :, 2]))
    return ((out - target) ** 2).mean(axis=1)

  data = (jnp.asarray(theta, dtype), jnp.asarray(target, dtype))
  return loss, numpy_loss, data


def run_one(alpha, t_final, dtype, lambdas, args, x0):
  import amc_jax

  loss, numpy_loss, data = problem(args.k_points, dtype)
  x0 = x0.astype(dtype)
  out = {"alpha": alpha, "t_final": t_final, "dtype": str(dtype), "lambdas": {}}
  for lam in lambdas:
    sigma = lam * alpha * math.sqrt(2 * math.pi)  # Eq. 51
    steps = int(round(t_final / (lam * alpha)))
    records = args.records
    while steps % records or abs(lam * steps / records - round(lam * steps / records)) > 1e-6:
      steps += 1  # a whole number of gradient steps per record
    t0 = time.perf_counter()
    r = amc_jax.correspondence(
        loss, x0, sigma=sigma, learning_rate=alpha, n_chains=args.chains, mc_steps=steps,
        n_records=records, n_kept=args.kept, data=data, seed=args.seed,
    )
    wall = time.perf_counter() - t0
    if "chosen" not in out:
      out["chosen"] = np.argsort(-np.abs(r.gd[-1] - r.gd[0]))[:4]
    chosen = out["chosen"]
    check = max(
        float(np.max(np.abs(numpy_loss(r.mc_chains[-1]) - r.mc_loss_chains[-1]) / numpy_loss(r.mc_chains[-1]))),
        float(abs(numpy_loss(r.gd[-1][None])[0] - r.gd_loss[-1]) / numpy_loss(r.gd[-1][None])[0]),
    )
    print(f"alpha {alpha:g} {dtype} lambda {lam:g}: {steps} MC steps x {args.chains} chains in {wall:.1f} s;"
          f" t = {r.time[-1]:.4g}, Delta = {r.delta[-1]:.3g} (floor {r.delta_floor[-1]:.3g}),"
          f" U_gd = {r.gd_loss[-1]:.4f}, <U_mc> = {r.mc_loss_mean[-1]:.4f}, numpy check {check:.1e}",
          flush=True)
    out["lambdas"][str(lam)] = {
        "sigma": sigma, "mc_steps": steps, "gd_steps": int(r.gd_steps[-1]), "wall_s": wall,
        "chain_steps_per_s": steps * args.chains / wall,
        "time": r.time, "delta": r.delta, "delta_floor": r.delta_floor,
        "gd_loss": r.gd_loss, "mc_loss_mean": r.mc_loss_mean, "mc_loss_std": r.mc_loss_std,
        "mc_loss_chains": r.mc_loss_chains, "acceptance": r.acceptance,
        "final": {"t": float(r.time[-1]), "delta": float(r.delta[-1]),
                  "delta_floor": float(r.delta_floor[-1]), "gd_loss": float(r.gd_loss[-1]),
                  "mc_loss_mean": float(r.mc_loss_mean[-1]),
                  "mean_acceptance": float(np.nanmean(r.acceptance))},
        "gd_final": r.gd[-1], "mc_mean_final": r.mc_mean[-1], "mc_chains_final": r.mc_chains[-1],
        # The four weights that gradient descent moves most (the same for every lambda).
        "chosen": chosen, "gd_chosen": r.gd[:, chosen], "mc_mean_chosen": r.mc_mean[:, chosen],
        "mc_chains_chosen": r.mc_chains[:, :, chosen],
        "numpy_check_max_rel_err": check,
    }
  return out


def plot(run, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  lams = sorted(run["lambdas"], key=float)
  small = run["lambdas"][lams[0]]
  gd = np.asarray(small["gd_chosen"])  # [R, 4]
  fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
  t = np.asarray(small["time"])
  chains = np.asarray(small["mc_chains_chosen"])  # [R, kept, 4]
  mean = np.asarray(small["mc_mean_chosen"])
  for j in range(gd.shape[1]):
    ax[0, 0].plot(t, chains[:, :, j], color="0.75", lw=0.5)
    ax[0, 0].plot(t, mean[:, j], color="tab:green", lw=2, label="MC mean" if j == 0 else None)
    ax[0, 0].plot(t, gd[:, j], "k--", lw=1.2, label="GD (Eq. 49)" if j == 0 else None)
  ax[0, 0].set(xlabel="t", ylabel="weight", title=f"(a) four weights, lambda = {lams[0]}")
  ax[0, 0].legend()
  gd_final = np.asarray(small["gd_final"])
  ax[0, 1].plot(gd_final, np.asarray(small["mc_chains_final"]).T, ".", color="0.75", ms=2)
  ax[0, 1].plot(gd_final, small["mc_mean_final"], "o", color="tab:green", ms=4, label="MC mean")
  lim = [gd_final.min(), gd_final.max()]
  ax[0, 1].plot(lim, lim, "k-", lw=0.8)
  ax[0, 1].set(xlabel="x_i, GD", ylabel="x_i, MC", title=f"(b) all weights at t = {t[-1]:.3g}")
  ax[0, 1].legend()
  ax[0, 2].plot(t, np.asarray(small["mc_loss_chains"]), color="0.75", lw=0.5)
  ax[0, 2].plot(t, small["mc_loss_mean"], color="tab:green", lw=2, label="<U> over chains")
  ax[0, 2].plot(t, small["gd_loss"], "k--", label="GD")
  ax[0, 2].set(xlabel="t", ylabel="U", title="(c) loss")
  ax[0, 2].legend()
  colours = plt.cm.viridis(np.linspace(0, 0.85, len(lams)))
  for lam, c in zip(lams, colours):
    r = run["lambdas"][lam]
    tt = np.asarray(r["time"])
    ax[1, 0].plot(tt, np.asarray(r["mc_mean_chosen"])[:, 0], color=c, label=f"lambda {lam}")
    ax[1, 1].semilogy(tt[1:], np.asarray(r["delta"])[1:], color=c, label=f"lambda {lam}")
    ax[1, 1].semilogy(tt[1:], np.asarray(r["delta_floor"])[1:], color=c, ls=":")
    ax[1, 2].plot(tt, r["mc_loss_mean"], color=c, label=f"lambda {lam}")
  ax[1, 0].plot(t, gd[:, 0], "k--", label="GD")
  ax[1, 0].set(xlabel="t", ylabel="weight", title="(d) one weight, MC mean per lambda")
  ax[1, 1].set(xlabel="t", ylabel="Delta(t)", title="(e) Delta (Eq. 52); dotted: ensemble floor")
  ax[1, 2].plot(t, small["gd_loss"], "k--", label="GD")
  ax[1, 2].set(xlabel="t", ylabel="<U>", title="(f) loss per lambda")
  for a in ax[1]:
    a.legend(fontsize=8)
  fig.suptitle(f"Metropolis (T = 0) vs normalized GD, alpha = {run['alpha']:g}, {run['dtype']}, "
               f"{len(small['mc_chains_final'])} single chains shown")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  print(f"wrote {path}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--run", nargs="+", action="append", metavar="ALPHA T_FINAL [DTYPE]",
                 help="learning rate, final time and dtype (float32 or float64, default float32)"
                      " of one run (repeatable); default: 1e-5 5e-4 float64, 1e-5 5e-4 float32,"
                      " 1e-2 2 float32")
  p.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 0.2, 0.5])
  p.add_argument("--chains", type=int, default=1000)
  p.add_argument("--records", type=int, default=50)
  p.add_argument("--kept", type=int, default=25)
  p.add_argument("--k-points", type=int, default=K_POINTS)
  p.add_argument("--seed", type=int, default=0, help="key of the chains (the init uses key 0)")
  p.add_argument("--quick", action="store_true", help="100 chains, 10 records, short runs")
  p.add_argument("--no-xla-workaround", action="store_true",
                 help="skip amc_jax.use_xla_cpu_workaround() (the NumPy check still runs)")
  p.add_argument("--out", type=pathlib.Path, default=RESULTS.parent / "out" / "bench_correspondence.json")
  p.add_argument("--no-plot", action="store_true")
  args = p.parse_args(argv)
  import amc_jax

  if not args.no_xla_workaround:
    amc_jax.use_xla_cpu_workaround()  # before the first computation
  import jax
  import jax.numpy as jnp

  if args.run:
    runs = []
    for r in args.run:
      if len(r) not in (2, 3) or (len(r) == 3 and r[2] not in ("float32", "float64")):
        p.error(f"--run takes ALPHA T_FINAL [float32|float64], got {' '.join(r)}")
      runs.append((float(r[0]), float(r[1]), r[2] if len(r) == 3 else "float32"))
  else:
    runs = [(1e-5, 5e-4, "float64"), (1e-5, 5e-4, "float32"), (1e-2, 2.0, "float32")]
  if args.quick:
    args.chains, args.records = min(args.chains, 100), 10
    runs = runs if args.run else [(1e-2, 0.2, "float32")]
  if any(dtype == "float64" for _, _, dtype in runs):
    jax.config.update("jax_enable_x64", True)
  # N(0, 1e-4), drawn once in float32 for every run.
  x0 = 1e-2 * jax.random.normal(jax.random.key(0), (3 * HIDDEN,), jnp.float32)
  start = time.perf_counter()
  results = [run_one(a, t, jnp.dtype(d), args.lambdas, args, x0) for a, t, d in runs]
  for r in results:
    r.pop("chosen")
  wall = time.perf_counter() - start
  plots = []
  args.out.parent.mkdir(parents=True, exist_ok=True)
  if not args.no_plot:
    for run in results:
      path = args.out.with_name(f"{args.out.stem}_alpha{run['alpha']:g}_{run['dtype']}.png")
      plot(run, path)
      plots.append(str(path.name))
  table = {f"alpha {r['alpha']:g}, {r['dtype']}, lambda {lam}": v["final"] for r in results for lam, v in r["lambdas"].items()}
  for name, row in table.items():
    print(f"{name}: t = {row['t']:.4g}  Delta = {row['delta']:.3g}  floor = {row['delta_floor']:.3g}")
  print(f"total wall time {wall:.0f} s")
  record = {
      "command": "python -m benchmarks.studies.correspondence " + " ".join(argv if argv is not None else sys.argv[1:]),
      "problem": f"Eq. 48 net, {HIDDEN} tanh units ({3 * HIDDEN} params), sin(2 pi theta) at K = {args.k_points}"
                 " points, init N(0, 1e-4) with jax.random.key(0), T = 0",
      "chains": args.chains, "records": args.records, "kept": args.kept, "seed": args.seed,
      "xla_cpu_workaround": not args.no_xla_workaround,
      "final": table, "wall_s_total": wall, "plots": plots,
      "runs": _common.jsonable(results, digits=6),  # six significant digits keep the JSON small
  }
  _common.write_json(args.out, record)


if __name__ == "__main__":
  main()
