"""The results table of the non-differentiable-net experiments, from their JSON.

For each experiment and dataset: every method's final test accuracy (median
and range over seeds), cost, and which method had the best median test
accuracy at fixed budgets of loss evaluations and of seconds (the
``summary`` each script stores; see ``_nondiff.py`` for the conventions).

  python benchmarks/nondiff/table.py benchmarks/results/nondiff_*.json
"""

from __future__ import annotations

import argparse
import json
import pathlib

EVALUATION_BUDGETS = (1_000, 10_000, 50_000)
SECOND_BUDGETS = (1.0, 10.0, 100.0)


def _acc_at(runs: list[dict], method: str, axis: str, budget: float) -> tuple[float, bool]:
  values, early = [], False
  for r in runs:
    if r["method"] != method:
      continue
    costs, acc = r["curve"][axis], r["curve"]["test_accuracy"]
    i = max(j for j, c in enumerate(costs) if c <= budget)
    values.append(acc[i])
    early = early or (i == len(costs) - 1 and costs[-1] < budget)
  values.sort()
  return values[len(values) // 2], early


def winners(runs: list[dict], axis: str, budget: float) -> str:
  methods = list(dict.fromkeys(r["method"] for r in runs))
  scored = [(m, *_acc_at(runs, m, axis, budget)) for m in methods]
  scored.sort(key=lambda t: -t[1])
  (m1, a1, e1), (m2, a2, e2) = scored[0], scored[1]
  return f"{m1} {a1:.3f}{'*' if e1 else ''} (next: {m2} {a2:.3f}{'*' if e2 else ''})"


def main(argv=None) -> str:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("json", nargs="+", type=pathlib.Path)
  args = p.parse_args(argv)
  final = ["| experiment | data | method | steps | median s | test accuracy, median (min-max) |",
           "| --- | --- | --- | --- | --- | --- |"]
  best = ["| experiment | data | budget | best median test accuracy (runner-up) |",
          "| --- | --- | --- | --- |"]
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
      for axis, budgets, unit in (("evaluations", EVALUATION_BUDGETS, "evaluations"),
                                  ("seconds", SECOND_BUDGETS, "s")):
        for b in budgets:
          best.append(f"| {record['experiment']} | {ds} | {b:g} {unit} | "
                      f"{winners(runs, axis, b)} |")
  text = "\n".join(final) + "\n\n" + "\n".join(best)
  print(text)
  return text


if __name__ == "__main__":
  main()
