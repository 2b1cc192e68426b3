"""Signal norm (Section III B of Whitelam et al. 2022): what it costs.

Time per aMC step with signal norm on against off, same model, data and
hyperparameters, measured in one run with the repeats of the two variants
interleaved (so they share the load of a shared machine); each is the median
over ``--repeats`` after a warm-up compile. A variant is one jitted
``lax.scan`` of ``tx.update`` + ``optax.apply_updates`` in batch mode (one
loss evaluation per step) with the data passed as arguments of the jitted
function: closed-over data would be a constant, and constants stop XLA from
hoisting loop-invariant work (the first layer's sum of squared inputs) out of
the loop. Models (``_problems.MLP``, ``_problems.DeepNarrow``):

1. the 784-16-16-10 tanh MLP with softmax outputs and MSE against one-hot
   labels on the Fashion-MNIST training images (``--mlp-examples``, all 60000
   by default; random data of the same shape when the IDX files are absent,
   recorded in the JSON), full batch;
2. the deep narrow net of Fig. 6, depth ``--cost-depth`` (32), on 1000 points.

The issue's target is on / off <= 1.15. ``--no-xla-workaround`` skips
``amc_jax.use_xla_cpu_workaround()``: its flag turns off XLA:CPU's fused
reductions, which signal norm's sums of squares pay for (the JSON records
which). A third, diagnostic variant runs the signal-norm step with the
lambdas fixed to 1 (``value_fn`` returns ones): the step's own share of the
cost, without the statistics of Eq. (17). After timing, the loss cached in
each final state is checked against a float64 NumPy forward pass of the
final params.

What signal norm buys (Fig. 6 of the paper: deep narrow nets, aMC with signal
norm on and off, Adam) is ``python -m benchmarks.paper.fig6_deep``, which
writes ``bench_signal_norm_effect.json`` too. ``--part`` remains for the
recorded commands: ``cost`` and ``all`` run the cost part, ``effect`` says
where it went.

  python -m benchmarks.studies.signal_norm [--part cost] [--no-xla-workaround]

Prints a table and writes JSON (with the machine described) to
``bench_signal_norm_cost.json`` (``_noworkaround`` before ``.json`` without the
workaround) in ``--out-dir`` (default ``benchmarks/out``). A tiny
configuration for the tests:

  python -m benchmarks.studies.signal_norm --repeats 1 --mlp-examples 500 \\
      --mlp-scan-steps 2 --deep-scan-steps 20 --cost-depth 4 --out-dir /tmp/x
"""

from __future__ import annotations

import os
import pathlib
import sys
import time



from benchmarks import _common
from benchmarks import _problems
from benchmarks._signal_norm import EPSILON, N_RESET, SIGMA0, cost_of

N_POINTS = _problems.DEEP_POINTS  # points of the deep-net problem
INIT_STD = _problems.INIT_STD
MLP, DeepNarrow, deep_problem = _problems.MLP, _problems.DeepNarrow, _problems.deep_problem


def part_cost(args, argv, suffix, workaround):
  load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
  x, y, what = _problems.fashion_mnist_jax(args.mlp_examples)
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
      "command": _common.command(),
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


def main(argv=None):
  parser = _common.parser(__doc__.split("\n")[0], quick=None, out_dir=False, no_plot=None,
                          xla_workaround=("skip amc_jax.use_xla_cpu_workaround() (outputs get"
                                          " _noworkaround)"))
  parser.add_argument("--part", choices=["cost", "effect", "all"], default="all",
                      help="cost (= all); the effect part is Fig. 6: python -m"
                           " benchmarks.paper.fig6_deep")
  parser.add_argument("--out-dir", default=str(_common.OUT))
  parser.add_argument("--repeats", type=int, default=11)
  parser.add_argument("--mlp-examples", type=int, default=60_000)
  parser.add_argument("--mlp-scan-steps", type=int, default=20,
                      help="steps per timed scan, MLP (full batch)")
  parser.add_argument("--deep-scan-steps", type=int, default=2000,
                      help="steps per timed scan, deep narrow net")
  parser.add_argument("--cost-depth", type=int, default=32)
  args = parser.parse_args(argv)
  if args.part == "effect":
    parser.error("the effect part (Fig. 6) moved: python -m benchmarks.paper.fig6_deep")
  workaround = not args.no_xla_workaround
  _common.start(args)  # before the first computation
  argv = sys.argv[1:] if argv is None else argv
  suffix = "" if workaround else "_noworkaround"
  return {"cost": part_cost(args, argv, suffix, workaround)}


if __name__ == "__main__":
  main()
