"""One script for an accelerator (or any machine): the figures an accelerator changes.

Four parts, each timed as medians of interleaved repeats after a warm-up
compile (``_common.interleaved_times``), all rows of a part in one run:

1. ``chains``: chain-steps per second of the sine net (``_problems.sine``,
   aMC with epsilon 0.1, batch mode) for M vmapped chains, M in ``--chains``
   (default 1 ... 100000), and the time of an M-chain step relative to one
   chain's: on an accelerator M chains should cost far less than M times one.
2. ``mlp``: the 784-16-16-10 MLP in full batch on ``--mlp-examples`` (60000)
   Fashion-MNIST-format examples (random data of that shape when the IDX
   files are absent; the JSON says which): the aMC step against its floor
   (one normal draw, one loss evaluation, compare, select in plain JAX) and
   against ``optax.adam`` + ``jax.value_and_grad``.
3. ``proposals``: the per-step cost of ``amc(..., num_proposals=K)`` for K in
   ``--proposals`` relative to K = 1, on the sine net and on the MLP: on a CPU
   K evaluations cost about K times one; on an accelerator, much less.
4. ``signal_norm``: aMC with signal norm on against off (the MLP and the
   depth-32 deep narrow net of ``studies/signal_norm.py``).

  python -m benchmarks.speed.device [--parts chains mlp proposals signal_norm]
      [--out benchmarks/results/bench_device_<platform>.json] [--budget-s 270]

Writes JSON with the device named (``jax.devices()[0]``, its kind and
platform). On one GPU the default run is sized to finish in under 5 minutes;
``--budget-s`` stops adding rows to a part once the run has used that many
seconds (the JSON lists what was skipped). On a CPU use ``--cpu`` for sizes
that finish in minutes there.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

import amc_jax

from benchmarks import _common
from benchmarks import _problems
from benchmarks import _scans
from benchmarks import _signal_norm

SIGMA0, EPSILON, N_RESET = 1e-2, 0.1, 100


def _device() -> dict:
  d = jax.devices()[0]
  return {
      "platform": d.platform,
      "device_kind": getattr(d, "device_kind", str(d)),
      "device": str(d),
      "n_devices": jax.device_count(),
  }


def part_chains(args, deadline):
  problem = _problems.sine(1000, 30)
  value = lambda p: problem.loss(p, problem.data)
  tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET)
  fns, steps, skipped = {}, {}, []
  for m in args.chains:
    if time.time() > deadline:
      skipped.append(m)
      continue
    n = max(5, min(args.chain_steps, args.chain_steps * 100 // m))
    fns[m] = _scans.vmapped_scan(tx, value, problem.params, m, n)
    steps[m] = n
  seconds = _common.interleaved_times(fns, args.repeats)[0] if fns else {}
  one = seconds[args.chains[0]] / steps[args.chains[0]] if args.chains[0] in seconds else None
  rows = {
      str(m): {
          "steps_per_scan": steps[m],
          "us_per_step": seconds[m] / steps[m] * 1e6,
          "chain_steps_per_second": m * steps[m] / seconds[m],
          "time_vs_first_row": (seconds[m] / steps[m]) / one if one else None,
      }
      for m in seconds
  }
  return {"problem": problem.description, "rows": rows, "skipped_chains": skipped}


def part_mlp(args, deadline):
  del deadline
  problem = _problems.mlp(args.mlp_examples)
  table = _scans.bench_problem(problem, args.mlp_steps, args.repeats, None, torch_dir=False)
  return table


def part_proposals(args, deadline):
  out = {}
  problems = {"sine": (_problems.sine(1000, 30), args.proposal_sine_steps)}
  if args.proposal_mlp_examples:
    problems["mlp"] = (_problems.mlp(args.proposal_mlp_examples), args.proposal_mlp_steps)
  for name, (problem, n_steps) in problems.items():
    fns, skipped = {}, []
    for k in args.proposals:
      if time.time() > deadline:
        skipped.append(k)
        continue
      tx = amc_jax.amc(SIGMA0, n_reset=N_RESET, num_proposals=k)
      f = _scans.scan_amc(tx, problem.loss, n_steps)
      p, s = f(problem.params, tx.init(problem.params), problem.data, jax.random.key(1))
      jax.block_until_ready(p)
      fns[k] = lambda f=f, p=p, s=s, d=problem.data: f(p, s, d, jax.random.key(1))
    seconds = _common.interleaved_times(fns, args.repeats)[0] if fns else {}
    first = seconds.get(args.proposals[0])
    out[name] = {
        "problem": problem.description,
        "steps_per_scan": n_steps,
        "us_per_step": {str(k): v / n_steps * 1e6 for k, v in seconds.items()},
        "cost_vs_first": {str(k): v / first for k, v in seconds.items()} if first else {},
        "skipped": skipped,
    }
  return out


def part_signal_norm(args, deadline):
  del deadline
  x, y, source = _problems.fashion_mnist_jax(args.mlp_examples)
  out = {"mlp_data": source}
  mlp = _problems.MLP()
  out["mlp"] = _signal_norm.cost_of(mlp, x, y, args.sn_mlp_steps, args.repeats, softmax=True)
  xd, yd = _problems.deep_problem()
  deep = _problems.DeepNarrow(depth=32)
  out["deep32"] = _signal_norm.cost_of(deep, xd, yd, args.sn_deep_steps, args.repeats, softmax=False)
  for table in (out["mlp"], out["deep32"]):
    table.pop("samples_s", None)
  return out


PARTS = {
    "chains": part_chains,
    "mlp": part_mlp,
    "proposals": part_proposals,
    "signal_norm": part_signal_norm,
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
  parser.add_argument("--cpu", action="store_true", help="sizes for a CPU (minutes, not hours)")
  parser.add_argument("--chains", type=int, nargs="+", default=None)
  parser.add_argument("--chain-steps", type=int, default=None)
  parser.add_argument("--mlp-examples", type=int, default=60_000)
  parser.add_argument("--mlp-steps", type=int, default=None)
  parser.add_argument("--proposals", type=int, nargs="+", default=[1, 4, 16, 64])
  parser.add_argument("--proposal-sine-steps", type=int, default=None)
  parser.add_argument("--proposal-mlp-examples", type=int, default=None)
  parser.add_argument("--proposal-mlp-steps", type=int, default=None)
  parser.add_argument("--sn-mlp-steps", type=int, default=None)
  parser.add_argument("--sn-deep-steps", type=int, default=None)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--budget-s", type=float, default=270.0,
                      help="stop adding rows to the chains/proposals parts after this many seconds")
  parser.add_argument("--no-xla-workaround", action="store_true")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  cpu = args.cpu
  defaults = {
      "chains": [1, 10, 100, 1000] if cpu else [1, 10, 100, 1000, 10_000, 100_000],
      "chain_steps": 2000 if cpu else 5000,
      "mlp_steps": 10 if cpu else 200,
      "proposal_sine_steps": 500 if cpu else 2000,
      "proposal_mlp_examples": 10_000 if cpu else 60_000,
      "proposal_mlp_steps": 5 if cpu else 100,
      "sn_mlp_steps": 10 if cpu else 200,
      "sn_deep_steps": 200 if cpu else 1000,
  }
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if not args.no_xla_workaround:
    amc_jax.use_xla_cpu_workaround()  # before the first computation; CPU only
  start = time.time()
  deadline = start + args.budget_s
  result = {
      "command": "python -m benchmarks.speed.device " + " ".join(argv if argv is not None else sys.argv[1:]),
      "device": _device(),
      "hyperparameters": {"sigma0": SIGMA0, "epsilon": EPSILON, "n_reset": N_RESET},
      "repeats": args.repeats,
  }
  for name in args.parts:
    t0 = time.time()
    result[name] = PARTS[name](args, deadline)
    result[name + "_wall_s"] = time.time() - t0
    print(f"\n== {name} ({result[name + '_wall_s']:.0f} s)")
    print(_common.dumps(_common.jsonable(result[name], digits=4)))
  result["wall_s"] = time.time() - start
  out = args.out or str(
      _common.OUT / f"bench_device_{result['device']['platform']}.json"
  )
  _common.write_json(out, result)
  return result


if __name__ == "__main__":
  main()
