"""The results table of the non-differentiable-net experiments, from their JSON.

For each experiment and dataset: every method's final test accuracy (median
and range over seeds) and cost; and at fixed budgets of loss evaluations and
of seconds, the Monte Carlo method and the gradient method (through its
surrogate) with the best median test accuracy, and which is higher (see
``_nondiff.py`` for the conventions; ``*``: the run ended before the budget
and keeps its final value).

  python -m benchmarks.nondiff.table benchmarks/results/nondiff_*.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics

from benchmarks.nondiff._nondiff import at_budget

EVALUATION_BUDGETS = (1_000, 10_000, 50_000)
SECOND_BUDGETS = (1.0, 10.0, 100.0)


def _acc_at(runs: list[dict], method: str, axis: str, budget: float) -> tuple[float, bool]:
  """Median over ``method``'s runs of :func:`at_budget`, and whether any ended early."""
  found = [at_budget(r["curve"], axis, budget) for r in runs if r["method"] == method]
  return statistics.median(a for a, _ in found), any(e for _, e in found)


def winners(runs: list[dict], axis: str, budget: float) -> tuple[str, str, str]:
  """The best Monte Carlo and the best gradient method at ``budget``, and the winner."""
  best = {}
  for m in dict.fromkeys(r["method"] for r in runs):
    kind = "mc" if any("acceptance" in r for r in runs if r["method"] == m) else "gd"
    acc, early = _acc_at(runs, m, axis, budget)
    if kind not in best or acc > best[kind][1]:
      best[kind] = (m, acc, early)
  cells = [f"{m} {a:.3f}{'*' if e else ''}" for m, a, e in (best["mc"], best["gd"])]
  winner = "Monte Carlo" if best["mc"][1] > best["gd"][1] else (
      "tie" if best["mc"][1] == best["gd"][1] else "gradient")
  return cells[0], cells[1], winner


def main(argv=None) -> str:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("json", nargs="+", type=pathlib.Path)
  args = p.parse_args(argv)
  final = ["| experiment | data | method | steps | median s | test accuracy, median (min-max) |",
           "| --- | --- | --- | --- | --- | --- |"]
  best = ["| experiment | data | budget | best Monte Carlo (median test accuracy) | best "
          "gradient surrogate | higher |", "| --- | --- | --- | --- | --- | --- |"]
  for path in args.json:
    record = json.loads(path.read_text())
    for ds, block in record["datasets"].items():
      runs = block["runs"]
      for m in dict.fromkeys(r["method"] for r in runs):
        mine = [r for r in runs if r["method"] == m]
        acc = sorted(r["final_test_accuracy"] for r in mine)
        secs = sorted(r["curve"]["seconds"][-1] for r in mine)
        final.append(f"| {record['experiment']} | {ds} | {m} | {mine[0]['steps']} | "
                     f"{secs[len(secs) // 2]:.0f} | {acc[len(acc) // 2]:.3f} "
                     f"({acc[0]:.3f}-{acc[-1]:.3f}) |")
      if all("acceptance" in r for r in runs):
        continue  # Monte Carlo only (move_choice.py): no side-by-side rows
      for axis, budgets, unit in (("evaluations", EVALUATION_BUDGETS, "evaluations"),
                                  ("seconds", SECOND_BUDGETS, "s")):
        for b in budgets:
          mc, gd, winner = winners(runs, axis, b)
          best.append(f"| {record['experiment']} | {ds} | {b:g} {unit} | {mc} | {gd} | {winner} |")
  text = "\n".join(final) + "\n\n" + "\n".join(best)
  print(text)
  return text


if __name__ == "__main__":
  main()
