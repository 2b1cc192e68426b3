"""Fig. 2 of Whitelam et al. (2022): acceptance rate vs loss and net size, Metropolis vs aMC.

Fully connected tanh nets 1 -> depth x [Dense(width), tanh] -> Dense(1) learn
f0(theta) = sin(2 pi theta) on 1000 evenly spaced points of [0, 1] (MSE loss),
from flax's default init (LeCun-normal kernels, zero biases; the paper does
not state Fig. 2's init). Two samplers, both at zero temperature in batch mode
through ``amc_jax.fit``:

- MC: plain Metropolis, ``amc_jax.metropolis(sigma=1e-3)`` (Fig. 2a, b);
- aMC: ``amc_jax.amc(sigma0=1e-2, epsilon=1e-2, n_reset=100, signal_norm=True)``
  (Fig. 2c, d).

Sizes: width 10 .. 316 at depth 2 (the paper goes to 1000, ~1e6 parameters:
here one step of 3 chains at width 1000 takes ~0.4 s, too slow for the
budget), and depth 2 .. 10 at width 25. ``--seeds`` chains per net run as one
vmapped ensemble (the paper averages 5 simulations).

Runs of a few thousand steps take plain MC (sigma = 1e-3) from the initial
loss ~0.5 only to ~0.1, where its acceptance is still ~0.5. To see MC's
acceptance at lower losses, each net also runs ``--cont-steps`` of the same MC
continued from aMC's final nets (loss ~1e-3..1e-4); MC's curve (``MC_pooled``)
pools the windows of both MC runs. This is our addition: the paper follows one
MC trajectory per run all the way down.

Acceptance vs loss: ``fit`` logs, every ``--log-every`` steps, the fraction
of that window's steps that were accepted and the loss at its end. Windows of
all seeds are pooled and binned by log10(loss) (4 bins per decade); A(U) is
the mean acceptance of a bin. A(U0) at a fixed loss U0 (the horizontal cuts
of Fig. 2, right) is the mean acceptance of the windows whose end loss lies
within a factor 10^(1/8) of U0.

The paper's claims: for MC the acceptance rate falls sharply with loss and
only slowly with the number of parameters N (4 decades of N cost about 1
decade of A; slower than N^-1); for aMC the acceptance rate stays large and
roughly constant in loss and size.

  python -m benchmarks.paper.fig2_acceptance            # full (<= ~12 minutes)
  python -m benchmarks.paper.fig2_acceptance --quick    # width 10 only, 300 steps
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.paper import _paper

NAME = "fig2_acceptance"
N_POINTS = 1000
MC_SIGMA = 1e-3
AMC = {"sigma0": 1e-2, "epsilon": 1e-2, "n_reset": 100, "signal_norm": True}
U0S = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4)
BINS_PER_DECADE = 4
TITLES = {"MC_pooled": "MC (+ MC continued from aMC nets)", "aMC": "aMC"}
CLAIM = ("Fig. 2: sin(2 pi theta) on 1000 points, tanh nets of width 10..1000 at depth 2 and"
         " depth 2..10 at width 25; MC sigma = 1e-3, aMC (sigma0, epsilon, n_s, signal norm) ="
         " (1e-2, 1e-2, 1e2, on), 5 simulations per point. MC: acceptance A falls sharply with"
         " loss (to ~1e-6 at U ~ 1e-8) but only slowly with N (4 decades of N -> ~1 decade of A,"
         " slower than N^-1). aMC: A stays large and essentially constant with loss and size.")


def task():
  """(MLP class, data, mse): the nets and the sine task of Fig. 2."""
  import flax.linen as nn
  import jax.numpy as jnp

  class MLP(nn.Module):
    width: int
    depth: int

    @nn.compact
    def __call__(self, x):
      for _ in range(self.depth):
        x = jnp.tanh(nn.Dense(self.width)(x))
      return nn.Dense(1)(x)[:, 0]

  theta = jnp.linspace(0.0, 1.0, N_POINTS, dtype=jnp.float32)[:, None]
  target = jnp.sin(2.0 * jnp.pi * theta[:, 0])
  mse = lambda out, y: jnp.mean((out - y) ** 2)
  return MLP, (theta, target), mse


def run(args):
  import jax
  import amc_jax

  MLP, data, mse = task()
  theta = data[0]

  nets = [("width", w, 2) for w in args.widths] + [("depth", 25, d) for d in args.depths]
  results = {}
  for family, width, depth in nets:
    key = f"w{width}_d{depth}"
    model = MLP(width, depth)
    init = lambda k, model=model: model.init(k, theta[:1])["params"]
    plain = lambda p, b, model=model: mse(model.apply({"params": p}, b[0]), b[1])
    sn = amc_jax.signal_norm_value_fn(model, mse)
    sn_loss = lambda p, b, sn=sn: sn(p, *b)
    n_params = int(sum(v.size for v in jax.tree_util.tree_leaves(init(jax.random.key(0)))))
    steps = args.steps_for.get(width, args.steps) if family == "width" else args.steps
    steps -= steps % args.log_every
    entry = results.setdefault(key, {"width": width, "depth": depth, "n_params": n_params,
                                     "families": [], "steps": steps, "methods": {}})
    entry["families"].append(family)
    if entry["methods"]:
      continue  # width 25 depth 2 appears in both families
    mc_tx = amc_jax.metropolis(MC_SIGMA, seed=args.seed)
    amc_tx = amc_jax.amc(AMC["sigma0"], AMC["epsilon"], AMC["n_reset"], signal_norm=True,
                         seed=args.seed)
    for method in ("MC", "aMC", "MC_from_aMC"):
      start, n = init, steps
      if method == "MC":
        tx, loss_fn = mc_tx, plain
      elif method == "aMC":
        tx, loss_fn = amc_tx, sn_loss
      else:
        # Plain MC continued from aMC's final nets: MC's acceptance at losses
        # that MC from scratch does not reach in this budget. Same tx, loss
        # and chunk shape as the MC run, so nothing recompiles.
        if args.cont_steps <= 0:
          continue
        tx, loss_fn, start, n = mc_tx, plain, amc_params, args.cont_steps
      t0 = _paper.Timer()
      res = amc_jax.fit(tx, start, loss_fn, data, steps=n, n_chains=args.seeds,
                        chunk=math.gcd(1000, n), log_every=args.log_every,
                        key=args.seed, progress=False)
      wall = t0()
      if method == "aMC":
        amc_params = res.params
      loss = np.asarray(res.history["loss"], np.float64)  # [rows, seeds]
      acc = np.asarray(res.history["acceptance"], np.float64)
      sigma = np.asarray(res.history["sigma"], np.float64)
      entry["methods"][method] = {
          "steps": n,
          "wall_s": wall,
          "history_step": res.history["step"],
          "loss": loss.T.tolist(),
          "acceptance": acc.T.tolist(),
          "final_loss": loss[-1].tolist(),
          "final_sigma": sigma[-1].tolist(),
          "overall_acceptance": float(acc.mean()),
          "binned": binned(loss, acc),
          "A_at_U0": a_at(loss, acc),
      }
      print(f"  {key:9s} N={n_params:7d} {method:11s} {n:6d} steps: loss"
            f" {np.median(loss[0]):.2e} -> {np.median(loss[-1]):.2e}, acceptance first/last"
            f" window {acc[0].mean():.3f}/{acc[-1].mean():.3f}  ({wall:.1f} s)", flush=True)
    # MC's windows from scratch and continued, pooled: the MC curve of Fig. 2a, b.
    parts = [entry["methods"][m] for m in ("MC", "MC_from_aMC") if m in entry["methods"]]
    loss = np.concatenate([np.asarray(m["loss"]).ravel() for m in parts])
    acc = np.concatenate([np.asarray(m["acceptance"]).ravel() for m in parts])
    entry["methods"]["MC_pooled"] = {
        "final_loss": entry["methods"]["MC"]["final_loss"],
        "overall_acceptance": float(acc.mean()),
        "binned": binned(loss, acc),
        "A_at_U0": a_at(loss, acc),
    }
  return results


def binned(loss, acc):
  """Mean acceptance of the windows binned by log10(end loss), BINS_PER_DECADE per decade."""
  lg = np.log10(np.maximum(loss.ravel(), 1e-30))
  a = acc.ravel()
  idx = np.floor(lg * BINS_PER_DECADE).astype(int)
  out = []
  for b in sorted(set(idx.tolist()), reverse=True):
    m = idx == b
    out.append({"U_center": float(10 ** ((b + 0.5) / BINS_PER_DECADE)),
                "A": float(a[m].mean()), "windows": int(m.sum())})
  return out


def a_at(loss, acc):
  lo, hi = 10 ** (-1 / 8), 10 ** (1 / 8)
  out = {}
  for u0 in U0S:
    m = (loss >= u0 * lo) & (loss <= u0 * hi)
    out[f"{u0:g}"] = (float(acc[m].mean()) if m.any() else None)
  return out


def slope(xs, ys):
  """Least-squares slope of log10 y on log10 x, over pairs with y > 0 (None if < 2)."""
  pts = [(math.log10(x), math.log10(y)) for x, y in zip(xs, ys) if y is not None and y > 0]
  if len(pts) < 2:
    return None
  x, y = np.array(pts).T
  if np.ptp(x) == 0:
    return None
  return float(np.polyfit(x, y, 1)[0])


def analyse(results):
  out = {}
  for family in ("width", "depth"):
    nets = [r for r in results.values() if family in r["families"]]
    nets.sort(key=lambda r: r["n_params"])
    fam = {}
    for method in ("MC_pooled", "aMC"):
      # Acceptance vs loss within each net: slope of log A on log U over bins
      # with enough windows, and A at the highest / lowest loss bin reached.
      per_net = {}
      for r in nets:
        bins = [b for b in r["methods"][method]["binned"] if b["windows"] >= 2]
        per_net[f"w{r['width']}_d{r['depth']}"] = {
            "N": r["n_params"],
            "loss_range": ([bins[0]["U_center"], bins[-1]["U_center"]] if bins else None),
            "A_at_highest_loss_bin": bins[0]["A"] if bins else None,
            "A_at_lowest_loss_bin": bins[-1]["A"] if bins else None,
            "slope_logA_vs_logU": slope([b["U_center"] for b in bins], [b["A"] for b in bins]),
        }
      # A(U0) vs N: for each U0 reached by >= 2 nets, the log-log slope.
      vs_n = {}
      for u0 in U0S:
        pairs = [(r["n_params"], r["methods"][method]["A_at_U0"][f"{u0:g}"]) for r in nets]
        pairs = [(n, a) for n, a in pairs if a is not None]
        if len(pairs) >= 2:
          vs_n[f"{u0:g}"] = {"N": [p[0] for p in pairs], "A": [p[1] for p in pairs],
                             "slope_logA_vs_logN": slope(*zip(*pairs))}
      fam[method] = {"per_net": per_net, "A_at_U0_vs_N": vs_n}
    out[family] = fam
  return out


def verdict(analysis, results):
  lines, checks = [], {}
  mc_slopes, amc_slopes, n_slopes = [], [], []
  for family in ("width", "depth"):
    mc = analysis[family]["MC_pooled"]
    am = analysis[family]["aMC"]
    for r in mc["per_net"].values():
      if r["slope_logA_vs_logU"] is not None:
        mc_slopes.append(r["slope_logA_vs_logU"])
    for r in am["per_net"].values():
      if r["slope_logA_vs_logU"] is not None:
        amc_slopes.append(r["slope_logA_vs_logU"])
    for u0, v in mc["A_at_U0_vs_N"].items():
      if v["slope_logA_vs_logN"] is not None and len(v["N"]) >= 3:
        n_slopes.append(v["slope_logA_vs_logN"])
  mc_lo = [r["methods"]["MC_pooled"]["binned"][-1]["A"] for r in results.values()]
  amc_all = [r["methods"]["aMC"]["overall_acceptance"] for r in results.values()]
  mc_min_loss = min(min(r["methods"][m]["final_loss"]) for r in results.values()
                    for m in ("MC", "MC_from_aMC") if m in r["methods"])
  amc_min_loss = min(min(r["methods"]["aMC"]["final_loss"]) for r in results.values())
  checks["MC_A_falls_with_loss"] = bool(mc_slopes) and float(np.median(mc_slopes)) > 0.3
  checks["MC_A_vs_N_slower_than_N^-1"] = bool(n_slopes) and all(s > -1 for s in n_slopes)
  checks["aMC_A_flatter_than_MC"] = (bool(mc_slopes) and bool(amc_slopes)
                                     and float(np.median(amc_slopes)) < float(np.median(mc_slopes)))
  checks["aMC_A_large"] = min(amc_all) > 0.05
  lines.append(f"MC: median slope d log A / d log U over nets {np.median(mc_slopes):.2f}"
               if mc_slopes else "MC: no slope (too few loss bins)")
  lines.append(f"(A in the lowest-loss bin {min(mc_lo):.2e}..{max(mc_lo):.2e};"
               f" lowest loss reached by MC {mc_min_loss:.1e}, by aMC {amc_min_loss:.1e})")
  lines.append("MC: slopes of log A(U0) vs log N (>= 3 sizes) "
               + (", ".join(f"{s:.2f}" for s in n_slopes) if n_slopes else "n/a"))
  lines.append(f"aMC: median slope d log A / d log U {np.median(amc_slopes):.2f}"
               if amc_slopes else "aMC: no slope")
  lines.append(f"aMC overall acceptance per net {min(amc_all):.2f}..{max(amc_all):.2f}")
  ok = all(checks.values())
  n_ok = sum(checks.values())
  said = {
      "MC_A_falls_with_loss": "MC's acceptance falls with loss",
      "MC_A_vs_N_slower_than_N^-1": "MC's A(U0) falls with N more slowly than N^-1",
      "aMC_A_flatter_than_MC": "aMC's acceptance depends on loss less than MC's",
      "aMC_A_large": "aMC's acceptance stays large (> 0.05 overall per net)",
  }
  yes = [said[k] for k, v in checks.items() if v]
  no = [said[k] for k, v in checks.items() if not v]
  head = ("REPRODUCED" if ok else f"PARTLY reproduced ({n_ok} of {len(checks)} checks)" if n_ok
          else "NOT reproduced")
  head += (f" over the loss range reached here (down to ~{min(mc_min_loss, amc_min_loss):.0e},"
           " not the paper's 1e-8)")
  summary = (("; as in the paper: " + ", ".join(yes) if yes else "")
             + ("; unlike the paper: NOT " + ", NOT ".join(no) if no else ""))
  return ok, checks, head + summary + ". Numbers: " + "; ".join(lines) + "."


def plot(results, analysis, path):
  plt = _paper.pyplot()
  fig, axes = plt.subplots(2, 4, figsize=(18, 8))
  for row, method in enumerate(("MC_pooled", "aMC")):
    for col, family in enumerate(("width", "depth")):
      ax = axes[row][2 * col]
      nets = sorted([r for r in results.values() if family in r["families"]],
                    key=lambda r: r["n_params"])
      for i, r in enumerate(nets):
        b = r["methods"][method]["binned"]
        lab = (f"w = {r['width']}" if family == "width" else f"d = {r['depth']}") \
            + f" (N = {r['n_params']})"
        ax.plot([x["U_center"] for x in b], [max(x["A"], 1e-7) for x in b], "o-", ms=3,
                color=plt.cm.viridis(i / max(1, len(nets) - 1)), label=lab)
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.invert_xaxis()
      ax.set_xlabel("loss U")
      ax.set_ylabel("acceptance A")
      ax.set_title(f"{TITLES[method]}: A vs U, varying {family}", fontsize=9)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
      ax = axes[row][2 * col + 1]
      vs_n = analysis[family][method]["A_at_U0_vs_N"]
      for j, (u0, v) in enumerate(vs_n.items()):
        ax.plot(v["N"], v["A"], "s-", ms=4, label=f"U0 = {u0}")
      if vs_n:
        ns = np.array([min(min(v["N"]) for v in vs_n.values()),
                       max(max(v["N"]) for v in vs_n.values())], float)
        a0 = max(max(v["A"]) for v in vs_n.values())
        ax.plot(ns, a0 * ns[0] / ns, "k--", lw=0.8, label="N^-1")
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("number of parameters N")
      ax.set_ylabel("A(U0)")
      ax.set_title(f"{TITLES[method]}: A at fixed loss vs N, varying {family}", fontsize=9)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
  fig.suptitle("Fig. 2: acceptance of Metropolis (sigma = 1e-3) and aMC (1e-2, 1e-2, 100,"
               " signal norm) on sin(2 pi theta)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ---------------------------------------------------------------------------
# --study: why aMC's acceptance falls here (paper_fig2_amc_acceptance.json).
# ---------------------------------------------------------------------------

STUDY_NAME = "fig2_amc_acceptance"
STUDY_U0S = (0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4, 1e-4)


def resets_per_window(sigma, sigma0, decay=0.95):
  """Resets in each logged window, from the sigma at the window ends: [rows, seeds]."""
  s = np.concatenate([np.full((1, sigma.shape[1]), sigma0), sigma])
  return np.rint(np.log(s[1:] / s[:-1]) / np.log(decay)).astype(np.int64)


def study_variant(loss, acc, sigma, sigma0, n_reset, log_every):
  """Acceptance of one run counted three ways, by loss bin and at fixed losses.

  * per step: accepted moves / steps (what fit logs, the paper's A);
  * per window: the median over windows of the windows' per-step acceptance;
  * per step outside reset runs: accepted / (steps - n_s x resets), i.e.
    leaving out the n_s consecutive rejections that each reset costs.
  """
  accepted = acc * log_every
  if sigma0 is None:  # Metropolis: no resets
    resets = np.zeros_like(accepted, dtype=np.int64)
  else:
    resets = resets_per_window(sigma, sigma0)
  free = np.maximum(log_every - n_reset * resets, 1) if n_reset else np.full_like(acc, log_every)
  lo, hi = 10 ** (-1 / 8), 10 ** (1 / 8)
  at = {}
  for u0 in STUDY_U0S:
    m = (loss >= u0 * lo) & (loss <= u0 * hi)
    if m.sum() < 2:
      continue
    at[f"{u0:g}"] = {
        "windows": int(m.sum()),
        "A_per_step": float(accepted[m].sum() / (m.sum() * log_every)),
        "A_window_median": float(np.median(acc[m])),
        "A_outside_reset_runs": float(accepted[m].sum() / free[m].sum()),
        "resets_per_1000_steps": float(1000 * resets[m].sum() / (m.sum() * log_every)),
    }
  q = max(1, len(loss) // 4)  # the last quarter of the run: the adapted regime
  tail = slice(len(loss) - q, len(loss))
  last = {
      "loss_median": float(np.median(loss[tail])),
      "A_per_step": float(accepted[tail].sum() / accepted[tail].size / log_every),
      "A_window_median": float(np.median(acc[tail])),
      "A_outside_reset_runs": float(accepted[tail].sum() / free[tail].sum()),
      "resets_per_1000_steps": float(1000 * resets[tail].sum() / resets[tail].size / log_every),
      "fraction_of_steps_in_reset_runs": (float(n_reset * resets[tail].sum() /
                                                (resets[tail].size * log_every))
                                          if n_reset else 0.0),
  }
  if n_reset:
    last["A_times_n_s"] = last["A_per_step"] * n_reset
  return {"A_at_U0": at, "last_quarter": last, "binned": binned(loss, acc),
          "final_loss": loss[-1].tolist(), "final_sigma": sigma[-1].tolist(),
          "overall_acceptance": float(acc.mean())}


def study(args):
  import jax
  import amc_jax

  MLP, data, mse = task()
  theta = data[0]
  variants = [("MC", None, None, False)] + [
      (f"aMC n_s={n}", n, AMC["sigma0"], True) for n in args.study_n_reset] + [
      (f"aMC n_s={AMC['n_reset']}, signal norm off", AMC["n_reset"], AMC["sigma0"], False)]
  out = {}
  for spec in args.study_nets:
    width, depth = (int(x[1:]) for x in spec.split("_"))
    model = MLP(width, depth)
    init = lambda k, model=model: model.init(k, theta[:1])["params"]
    plain = lambda p, b, model=model: mse(model.apply({"params": p}, b[0]), b[1])
    sn = amc_jax.signal_norm_value_fn(model, mse)
    sn_loss = lambda p, b, sn=sn: sn(p, *b)
    n_params = int(sum(v.size for v in jax.tree_util.tree_leaves(init(jax.random.key(0)))))
    entry = out.setdefault(spec, {"width": width, "depth": depth, "n_params": n_params,
                                  "variants": {}})
    steps = args.steps - args.steps % args.log_every
    amc_params = None
    for name, n_reset, sigma0, signal_norm in variants:
      if n_reset is None:
        tx, loss_fn = amc_jax.metropolis(MC_SIGMA, seed=args.seed), plain
      else:
        tx = amc_jax.amc(sigma0, AMC["epsilon"], n_reset, signal_norm=signal_norm, seed=args.seed)
        loss_fn = sn_loss if signal_norm else plain
      t0 = _paper.Timer()
      res = amc_jax.fit(tx, init, loss_fn, data, steps=steps, n_chains=args.seeds,
                        chunk=math.gcd(1000, steps), log_every=args.log_every, key=args.seed,
                        progress=False)
      wall = t0()
      loss = np.asarray(res.history["loss"], np.float64)
      acc = np.asarray(res.history["acceptance"], np.float64)
      sigma = np.asarray(res.history["sigma"], np.float64)
      v = study_variant(loss, acc, sigma, sigma0, n_reset, args.log_every)
      v.update(wall_s=wall, n_reset=n_reset, signal_norm=signal_norm, steps=steps,
               curve={"step": res.history["step"].tolist(), "loss": loss.T.tolist(),
                      "acceptance": acc.T.tolist(), "sigma": sigma.T.tolist()})
      entry["variants"][name] = v
      if name == f"aMC n_s={AMC['n_reset']}":
        amc_params = res.params
      lq = v["last_quarter"]
      print(f"  {spec:8s} N={n_params:6d} {name:32s} loss {np.median(loss[-1]):.1e}; last"
            f" quarter A per step {lq['A_per_step']:.4f}, outside reset runs"
            f" {lq['A_outside_reset_runs']:.4f}, resets/1000 steps"
            f" {lq['resets_per_1000_steps']:.1f} ({wall:.1f} s)", flush=True)
    if amc_params is not None and args.cont_steps > 0:
      # Metropolis at the losses aMC reached: continued from aMC's final nets.
      res = amc_jax.fit(amc_jax.metropolis(MC_SIGMA, seed=args.seed), amc_params, plain, data,
                        steps=args.cont_steps, n_chains=args.seeds,
                        chunk=math.gcd(1000, args.cont_steps), log_every=args.log_every,
                        key=args.seed, progress=False)
      loss = np.asarray(res.history["loss"], np.float64)
      acc = np.asarray(res.history["acceptance"], np.float64)
      sigma = np.asarray(res.history["sigma"], np.float64)
      entry["variants"]["MC from aMC nets"] = study_variant(loss, acc, sigma, None, None,
                                                            args.log_every)
  return out


def _flatness(at, u0s=None):
  """max / min of the per-step acceptance over the U0 reached (those in u0s)."""
  vals = [v["A_per_step"] for u, v in at.items() if u0s is None or u in u0s]
  vals = [v for v in vals if v > 0]
  return (max(vals) / min(vals)) if len(vals) >= 2 else None


def study_verdict(out, n_resets):
  """Checks and text of --study: what sets aMC's acceptance, and how it compares with MC's."""
  lines, checks = [], {}
  paper_n = AMC["n_reset"]
  paper = f"aMC n_s={paper_n}"
  # (1) The floor: in the adapted regime (last quarter) A x n_s is about constant across n_s.
  prod = {n: [r["variants"][f"aMC n_s={n}"]["last_quarter"]["A_per_step"] * n
              for r in out.values()] for n in n_resets}
  a_last = {n: [r["variants"][f"aMC n_s={n}"]["last_quarter"]["A_per_step"] for r in out.values()]
            for n in n_resets}
  lines.append("(1) last-quarter acceptance per step (nets " + ", ".join(out) + "): " + "; ".join(
      f"n_s={n}: " + ", ".join(f"{a:.4f}" for a in a_last[n]) + " (A x n_s "
      + ", ".join(f"{x:.2f}" for x in prod[n]) + ")" for n in n_resets))
  medians = [float(np.median(v)) for v in prod.values()]
  checks["floor_set_by_n_s"] = bool(max(medians) / max(min(medians), 1e-12) < 4
                                    and np.median(a_last[n_resets[0]])
                                    > np.median(a_last[n_resets[-1]]))
  # (2) Three ways of counting the paper's run.
  lq = {k: [r["variants"][paper]["last_quarter"][k] for r in out.values()]
        for k in ("A_per_step", "A_window_median", "A_outside_reset_runs",
                  "fraction_of_steps_in_reset_runs", "resets_per_1000_steps")}
  lines.append(f"(2) {paper} (the paper's), last quarter: per step "
               + ", ".join(f"{a:.4f}" for a in lq["A_per_step"]) + "; median over "
               "windows " + ", ".join(f"{a:.4f}" for a in lq["A_window_median"])
               + " (accepted moves come in bursts); outside the reset runs "
               + ", ".join(f"{a:.4f}" for a in lq["A_outside_reset_runs"])
               + "; fraction of steps spent in reset runs (n_s rejections each) "
               + ", ".join(f"{f:.2f}" for f in lq["fraction_of_steps_in_reset_runs"])
               + "; resets per 1000 steps " + ", ".join(
                   f"{f:.1f}" for f in lq["resets_per_1000_steps"]))
  checks["counting_does_not_change_it"] = bool(
      max(o / max(a, 1e-12) for o, a in zip(lq["A_outside_reset_runs"], lq["A_per_step"])) < 2)
  # (3) Against loss: the paper's n_s falls to the floor, then stays; n_s = 10 is flat throughout.
  flat_adapted, flat_small = [], []
  rows = []
  for spec, r in out.items():
    a = r["variants"][paper]["A_at_U0"]
    below = [u for u in a if a[u]["A_per_step"] < 3 / paper_n]
    if below:
      first = max(float(u) for u in below)
      f = _flatness(a, [u for u in a if float(u) <= first])
      if f is not None:
        flat_adapted.append(f)
    small = r["variants"].get(f"aMC n_s={n_resets[0]}", {}).get("A_at_U0", {})
    f = _flatness(small)
    if f is not None:
      flat_small.append(f)
    mc = {**r["variants"]["MC"]["A_at_U0"],
          **r["variants"].get("MC from aMC nets", {}).get("A_at_U0", {})}
    rows.append(f"{spec}: " + ", ".join(
        f"U0={u}: {a[u]['A_per_step']:.3f}"
        + (f" (n_s={n_resets[0]} {small[u]['A_per_step']:.3f})" if u in small else "")
        + (f" / MC {mc[u]['A_per_step']:.3f}" if u in mc else "") for u in a))
  lines.append(f"(3) per-step A at fixed loss U0, {paper} (n_s={n_resets[0]}) / Metropolis"
               f" sigma={MC_SIGMA:g} on the same nets and loss: " + "; ".join(rows))
  # "Essentially constant": within half a decade (10^0.5) on the paper's six-decade A axis.
  checks["paper_n_s_flat_once_at_floor"] = bool(flat_adapted) and max(flat_adapted) < 10 ** 0.5
  checks[f"n_s_{n_resets[0]}_flat_over_all_losses"] = (bool(flat_small)
                                                       and max(flat_small) < 10 ** 0.5)
  lines.append(f"max/min of A over the losses at and below the one where {paper} first falls"
               " under 3/n_s: " + ", ".join(f"{f:.1f}" for f in flat_adapted)
               + f"; n_s={n_resets[0]} over all losses reached: "
               + ", ".join(f"{f:.1f}" for f in flat_small))
  # (4) Against Metropolis at the same losses (U0 <= 1e-3).
  ratios = []
  for r in out.values():
    a = r["variants"][paper]["A_at_U0"]
    mc = {**r["variants"]["MC"]["A_at_U0"],
          **r["variants"].get("MC from aMC nets", {}).get("A_at_U0", {})}
    ratios += [a[u]["A_per_step"] / mc[u]["A_per_step"] for u in a
               if u in mc and float(u) <= 1e-3 and mc[u]["A_per_step"] > 0]
  checks["paper_aMC_above_MC_at_same_loss"] = bool(ratios) and float(np.median(ratios)) > 1
  lines.append(f"(4) {paper} / Metropolis acceptance at the same loss (U0 <= 1e-3): "
               + (", ".join(f"{x:.2f}" for x in ratios) if ratios else "no shared losses"))
  off = [r["variants"][f"{paper}, signal norm off"]["last_quarter"]["A_per_step"]
         for r in out.values()]
  lines.append(f"(5) signal norm off ({paper}), last quarter per step: "
               + ", ".join(f"{a:.4f}" for a in off))
  head = ("aMC's acceptance in the adapted regime is set by n_s: A ~ 1-4 / n_s (0.3-0.4 for"
          " n_s = 10, ~0.01 for the paper's 100, ~0.002 for 1000), whatever the net, the"
          " signal norm and the way of counting; with n_s = 100 it falls from ~0.4 to that"
          " floor as sigma0 = 1e-2 becomes too large (by U ~ 1e-3 here) and then stays there"
          if checks["floor_set_by_n_s"] else "aMC's acceptance is NOT explained by the n_s floor")
  return checks, head + ". " + " ".join(lines) + "."


def study_plot(out, path, n_resets):
  plt = _paper.pyplot()
  fig, axes = plt.subplots(1, len(out), figsize=(5.5 * len(out), 4.3), squeeze=False)
  colors = {"MC": "k", "MC from aMC nets": "0.5"}
  for j, n in enumerate(n_resets):
    colors[f"aMC n_s={n}"] = plt.cm.viridis(j / max(1, len(n_resets) - 1))
  colors[f"aMC n_s={AMC['n_reset']}, signal norm off"] = "C3"
  for ax, (spec, r) in zip(axes[0], out.items()):
    for name, v in r["variants"].items():
      b = v["binned"]
      ax.plot([x["U_center"] for x in b], [max(x["A"], 1e-5) for x in b], "o-", ms=3,
              color=colors.get(name, "C1"), label=name)
      if v.get("n_reset"):
        ax.axhline(1 / v["n_reset"], color=colors.get(name, "C1"), ls=":", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="loss U", ylabel="acceptance A (per step)",
           title=f"{spec} (N = {r['n_params']}); dotted: 1/n_s")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
  fig.suptitle("Fig. 2 (c, d): aMC's acceptance against loss, by n_s and signal norm, with"
               " Metropolis (sigma = 1e-3) on the same nets", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_study(args):
  timer = _paper.Timer()
  n_resets = args.study_n_reset
  out = study(args)
  checks, text = study_verdict(out, n_resets)
  wall = timer()
  json_path, png_path = _paper.paths(args.out_dir, STUDY_NAME)
  if not args.no_plot:
    study_plot(out, png_path, n_resets)
  record = {
      "name": STUDY_NAME,
      "paper": "Whitelam et al. 2022, Fig. 2 (c, d): why aMC's acceptance falls here",
      "claim": ("aMC (sigma0, epsilon, n_s, signal norm) = (1e-2, 1e-2, 100, on): acceptance"
                " 'remaining large and essentially constant with loss or model size' (A axis"
                " 1e-6..1; Metropolis falls to ~1e-6 at U ~ 1e-8)"),
      "config": {"quick": args.quick, "nets": args.study_nets, "n_resets": n_resets,
                 "amc": AMC, "mc_sigma": MC_SIGMA, "steps": args.steps, "seeds": args.seeds,
                 "log_every": args.log_every, "mc_continued_from_amc_steps": args.cont_steps,
                 "init": "flax default (LeCun-normal kernels, zero biases)",
                 "counts": ("per step: accepted / steps (fit's history, the paper's A);"
                            " window median: median over log_every-step windows; outside"
                            " reset runs: accepted / (steps - n_s x resets), resets read off"
                            " the logged sigma (sigma -> 0.95 sigma per reset)")},
      "measured": {k: {**{kk: vv for kk, vv in r.items() if kk != "variants"},
                       "variants": {n: {kk: vv for kk, vv in v.items() if kk != "curve"}
                                    for n, v in r["variants"].items()}}
                   for k, r in out.items()},
      "curves": {k: {n: v["curve"] for n, v in r["variants"].items() if "curve" in v}
                 for k, r in out.items()},
      "checks": checks,
      "reproduced": study_reproduced(checks),
  }
  return _paper.finish(json_path, record, text, wall, add=True)


def study_reproduced(checks):
  """The paper's 'large and essentially constant', judged from the checks."""
  if not checks["floor_set_by_n_s"]:
    return "no"
  if checks["paper_n_s_flat_once_at_floor"] and checks["paper_aMC_above_MC_at_same_loss"]:
    return "yes"
  return ("partly: with the paper's n_s = 100 the acceptance is pinned at the reset floor"
          " ~1/n_s (constant in size and signal norm; in loss once at the floor"
          + ("" if checks["paper_n_s_flat_once_at_floor"] else ", within a factor 3.5") + "),"
          + (" larger than" if checks["paper_aMC_above_MC_at_same_loss"] else
             " not larger than") + " Metropolis' at the losses reached (>= 1e-4)"
          + ("; with n_s = 10 it stays large (0.2-0.5) and flat at every loss reached"
             if any(k.endswith("_flat_over_all_losses") and v for k, v in checks.items())
             else ""))


def study_from(path, no_plot):
  """Recomputes --study's checks, verdict and plot from its JSON (no rerun)."""
  import json
  import pathlib

  path = pathlib.Path(path)
  record = json.loads(path.read_text())
  out = record["measured"]
  n_resets = record["config"]["n_resets"]
  checks, text = study_verdict(out, n_resets)
  record.update(checks=checks, reproduced=study_reproduced(checks), verdict=text,
                verdict_recomputed={"by": _paper.command(),
                                    "machine_of_run": record.pop("machine", None)})
  if not no_plot:
    study_plot(out, path.with_suffix(".png"), n_resets)
  return _paper.finish(path, record, text)


def main(argv=None):
  p = _paper.parser(__doc__.split("\n")[0])
  p.add_argument("--widths", type=int, nargs="+", default=None,
                 help="widths at depth 2 (default 10 32 100 316; quick: 10)")
  p.add_argument("--depths", type=int, nargs="*", default=None,
                 help="depths at width 25 (default 2 4 6 10; quick: none)")
  p.add_argument("--steps", type=int, default=None, help="steps per net (default 6000; quick 300)")
  p.add_argument("--steps-316", type=int, default=None,
                 help="steps at width >= 316 (default 2000)")
  p.add_argument("--seeds", type=int, default=None, help="vmapped chains (default 3; quick 2)")
  p.add_argument("--cont-steps", type=int, default=None,
                 help="steps of MC continued from aMC's final nets (default 1000; quick 300;"
                      " 0: none)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--log-every", type=int, default=None,
                 help="steps per acceptance window (default 50; quick 20)")
  p.add_argument("--study", action="store_true",
                 help="why aMC's acceptance falls: n_s, signal norm and three ways of counting,"
                      " with Metropolis on the same nets (writes paper_fig2_amc_acceptance.json)")
  p.add_argument("--study-nets", nargs="+", default=None,
                 help="nets as w<width>_d<depth> (default w10_d2 w100_d2 w25_d10; quick w10_d2)")
  p.add_argument("--study-n-reset", type=int, nargs="+", default=None,
                 help="n_s values (default 10 100 1000; always include 100, the paper's)")
  p.add_argument("--study-from", metavar="JSON", default=None,
                 help="recompute --study's verdict and plot from its JSON (no rerun)")
  args = p.parse_args(argv)
  if args.study_from:
    return study_from(args.study_from, args.no_plot)
  _paper.start(args, quick=False)  # the XLA:CPU workaround, before any JAX computation
  q = args.quick
  if args.study:
    args.study_nets = args.study_nets or (["w10_d2"] if q else ["w10_d2", "w100_d2", "w25_d10"])
    args.study_n_reset = sorted(args.study_n_reset or [10, 100, 1000])
    if AMC["n_reset"] not in args.study_n_reset:
      p.error(f"--study-n-reset must include the paper's {AMC['n_reset']}")
    args.steps = args.steps or (400 if q else 6000)
    args.seeds = args.seeds or (2 if q else 3)
    args.log_every = args.log_every or (20 if q else 50)
    if args.cont_steps is None:
      args.cont_steps = 200 if q else 1000
    return run_study(args)
  args.widths = args.widths or ([10] if q else [10, 32, 100, 316])
  if args.depths is None:
    args.depths = [] if q else [2, 4, 6, 10]
  args.steps = args.steps or (300 if q else 6000)
  args.seeds = args.seeds or (2 if q else 3)
  args.log_every = args.log_every or (20 if q else 50)
  if args.cont_steps is None:
    args.cont_steps = 300 if q else 1000
  big = args.steps_316 or (args.steps if q else 2000)
  args.steps_for = {w: big for w in args.widths if w >= 316}
  timer = _paper.Timer()
  results = run(args)
  analysis = analyse(results)
  ok, checks, text = verdict(analysis, results)
  wall = timer()
  json_path, png_path = _paper.paths(args.out_dir, NAME)
  if not args.no_plot:
    plot(results, analysis, png_path)
  record = {
      "name": NAME,
      "paper": "Whitelam et al. 2022, Fig. 2",
      "claim": CLAIM,
      "config": {
          "quick": q, "points": N_POINTS, "target": "sin(2 pi theta), theta in [0, 1]",
          "init": "flax default (LeCun-normal kernels, zero biases); not stated in the paper",
          "mc": {"sigma": MC_SIGMA, "temperature": 0.0},
          "amc": AMC, "widths_at_depth_2": args.widths, "depths_at_width_25": args.depths,
          "steps": args.steps, "steps_width_316_plus": big,
          "mc_continued_from_amc_steps": args.cont_steps, "seeds": args.seeds,
          "seed": args.seed, "log_every": args.log_every, "bins_per_decade": BINS_PER_DECADE,
          "U0": U0S, "dtype": "float32",
          "reductions": ("width 1000 (the paper's largest) left out: ~0.4 s per step for 3"
                         " chains here; runs of a few thousand steps reach losses ~1e-2..1e-4,"
                         " not the paper's 1e-8"),
          "how": ("amc_jax.fit(n_chains=seeds, log_every) per net and sampler (MC also"
                  " continued from aMC's final nets, pooled with MC from scratch); history"
                  " 'acceptance' = fraction accepted in each window, 'loss' = loss at its"
                  " end; windows pooled over seeds and binned by log10(loss)"),
      },
      "measured": {"analysis": analysis,
                   "nets": {k: {**{kk: vv for kk, vv in r.items() if kk != "methods"},
                                "methods": {m: {kk: vv for kk, vv in v.items()
                                                if kk not in ("loss", "acceptance",
                                                              "history_step")}
                                            for m, v in r["methods"].items()}}
                            for k, r in results.items()}},
      "curves": {k: {m: {"step": v["history_step"], "loss": v["loss"],
                         "acceptance": v["acceptance"]} for m, v in r["methods"].items()
                     if "history_step" in v}
                 for k, r in results.items()},
      "checks": checks,
      "reproduced": ok,
  }
  return _paper.finish(json_path, record, text, wall, add=True)


if __name__ == "__main__":
  main()
