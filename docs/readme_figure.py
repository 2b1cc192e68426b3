"""Draws the README's picture, docs/amc_vs_adam.png, from a committed result.

The data are benchmarks/results/bench_signal_norm_effect.json (Fig. 6 of the
aMC paper: deep narrow tanh nets from the paper's init, 4 seeds, 30000 loss
evaluations per method); nothing is trained here. Run from the repository
root: ``python docs/readme_figure.py``.
"""

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "bench_signal_norm_effect.json"
OUT = ROOT / "docs" / "amc_vs_adam.png"
STYLE = {
    "aMC, signal norm on": ("C0", "-", "aMC, signal norm on"),
    "aMC, signal norm off": ("C2", "--", "aMC, signal norm off"),
    "Adam, lr 0.001": ("C3", "-", "Adam, lr 1e-3"),
    "Adam, lr 0.01": ("C1", ":", "Adam, lr 1e-2"),
    "Adam, lr 0.0001": ("C4", ":", "Adam, lr 1e-4"),
}


def main() -> None:
  d = json.loads(RESULT.read_text())
  steps = np.asarray(d["history_steps"])
  constant = d["baseline_mse_best_constant"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
  for ax, depth in zip(axes, ("16", "64")):
    for method, run in d["depths"][depth]["methods"].items():
      color, ls, label = STYLE[method]
      loss = np.asarray(run["history_loss"])  # [seeds, rows]
      for i, seed_loss in enumerate(loss):
        ax.plot(steps, seed_loss, color=color, ls=ls, lw=1.2, alpha=0.8,
                label=f"{label} ({len(loss)} seeds)" if i == 0 else None)
    ax.axhline(constant, color="k", lw=0.8, ls="-.")
    ax.set(xscale="log", yscale="log", xlabel="loss evaluations",
           title=f"depth {depth}, 4 tanh units per layer")
  axes[0].set_ylabel("MSE (dash-dot: best constant)")
  axes[1].legend(fontsize=8, loc="lower left")
  fig.suptitle("Deep narrow nets from the paper's init (Fig. 6): Adam stays put, aMC trains", fontsize=11)
  fig.tight_layout()
  fig.savefig(OUT, dpi=110)
  print("wrote", OUT.relative_to(ROOT))


if __name__ == "__main__":
  main()
