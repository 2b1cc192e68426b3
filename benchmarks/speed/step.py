"""Time per step of aMC against its floor, Adam, the fitting loop and PyTorch.

For each problem (``_problems.py``: the sine net, the 784-16-16-10 MLP on 60k
MNIST-format images in full batch and with minibatches of 2000, the deep
narrow net of depth 32, a tanh RNN on long sequences) one table, all rows
measured in the same run with their repeats interleaved, each the median over
repeats after a warm-up:

(a) ``amc_jax.amc`` inside a jitted ``lax.scan`` (``minibatch=True`` with the
    minibatch drawn in the scan, as ``amc_jax.fit`` draws it);
(b) the floor for that mode in plain JAX in the same scan: one normal draw,
    one loss evaluation, compare, select (batch mode); the minibatch draw plus
    two evaluations, compare, select (minibatch mode);
(c) ``optax.adam`` with ``jax.value_and_grad`` in the same scan;
(d) ``amc_jax.fit`` (one chunk of all the steps);
(e) the authors' PyTorch aMC optimizer (``_torch_reference.py``) when torch and
    a checkout of their code (``--amc-torch-dir`` or ``AMC_TORCH_DIR``) are
    available; skipped otherwise.

Then chain-steps per second for 1, 10, 100, 1000 vmapped chains of the sine
net; the sine net's Metropolis and aMC variants (epsilon 0 and 0.1, T = 0
and T = 1e-3) beside blackjax's random-walk Metropolis on the same target
(``pip install -e '.[blackjax]'``; skipped without it); and the accept/reject of the step as a ``lax.cond`` (the default) against
a select of the two outcomes (``--accept-chains``; the sine net and the MLP,
1, 10 and 100 vmapped chains; under ``vmap`` JAX turns the cond into a
select, so the two differ only for one chain).

  python -m benchmarks.speed.step [--problems sine mlp mlp_mb deep rnn] [--repeats 7]
  python -m benchmarks.speed.step --forms   # the loss written six ways (_forms.py)

Prints the tables and writes JSON (with the machine described) to
``benchmarks/out/bench_step.json`` (git-ignored) unless ``--out`` says otherwise;
``--out benchmarks/results/bench_step.json`` replaces the committed result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys

import jax
import jax.numpy as jnp

import amc_jax

from benchmarks import _common
from benchmarks import _problems
from benchmarks._problems import HIDDEN, N_POINTS, sine_problem
from benchmarks._scans import (EPSILON, N_RESET, ROW_TORCH, SIGMA0, bench_problem, floor_proposal,
                               scan_amc, scan_floor, time_interleaved, vmapped_floor,
                               vmapped_scan)


def bench_ensembles(chains, n_steps, repeats):
  params, loss = sine_problem()
  tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET)
  make = lambda m, n: vmapped_scan(tx, loss, params, m, n)

  # Fewer steps for bigger ensembles (n_steps * 10 / M, at least 10): a scan of
  # 1000 chains is compute-bound, and its median needs no more.
  steps = {m: max(10, min(n_steps, n_steps * 10 // m)) for m in chains}
  fns = {m: make(m, steps[m]) for m in chains}
  fns.update({("floor", m): vmapped_floor(loss, params, m, steps[m]) for m in chains})
  seconds = time_interleaved(fns, repeats)
  per_step = {m: seconds[m] / steps[m] for m in chains}
  floor = {m: seconds[("floor", m)] / steps[m] for m in chains}
  return {
      str(m): {
          "steps_per_scan": steps[m],
          "us_per_step": per_step[m] * 1e6,
          "chain_steps_per_second": m / per_step[m],
          "time_vs_one_chain": per_step[m] / per_step[chains[0]] if chains[0] == 1 else None,
          "floor_us_per_step": floor[m] * 1e6,
          "ratio_to_vmapped_floor": per_step[m] / floor[m],
      }
      for m in chains
  }


def bench_mlp_ensembles(chains, n_steps, n_examples, repeats):
  """M vmapped chains of the MLP on shared full-batch data, against the
  vmapped floor (the same M loss evaluations per step)."""
  problem = _problems.mlp(n_examples)
  value = lambda p: problem.loss(p, problem.data)
  tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET)
  fns = {}
  for m in chains:
    fns[m] = vmapped_scan(tx, value, problem.params, m, n_steps)
    fns[("floor", m)] = vmapped_floor(value, problem.params, m, n_steps)
  seconds = time_interleaved(fns, repeats)
  return {
      str(m): {
          "steps_per_scan": n_steps,
          "us_per_step": seconds[m] / n_steps * 1e6,
          "floor_us_per_step": seconds[("floor", m)] / n_steps * 1e6,
          "ratio_to_vmapped_floor": seconds[m] / seconds[("floor", m)],
      }
      for m in chains
  } | {"problem": problem.description}


@contextlib.contextmanager
def _accept_as(how, amc_lib):
  """Within it, the step's accept/reject ``lax.cond`` (``amc_lib.lax.cond``)
  is ``lax.cond`` (``how="cond"``) or a select of both outcomes
  (``how="select"``): the two arrangements timed side by side."""
  if how == "cond":
    yield
    return

  class _SelectLax:
    def __getattr__(self, name):
      return getattr(jax.lax, name)

    @staticmethod
    def cond(pred, true_fn, false_fn, *operands):
      return jax.tree_util.tree_map(
          lambda a, r: jnp.where(pred, a, r), true_fn(*operands), false_fn(*operands)
      )

  original = amc_lib.lax
  amc_lib.lax = _SelectLax()
  try:
    yield
  finally:
    amc_lib.lax = original


def bench_accept_with(problems, chains, repeats):
  """us per step of M chains with accept/reject as lax.cond vs select.

  ``problems`` maps a name to (problem, steps per scan for one chain); M
  chains run max(5, steps // M) steps per scan.
  """
  from amc_jax._src import amc as amc_lib  # pylint: disable=g-import-not-at-top

  out = {}
  for name, (problem, steps) in problems.items():
    params, loss, data = problem.params, problem.loss, problem.data
    value = lambda p: loss(p, data)
    fns, steps_of = {}, {}
    for m in chains:
      for how in ("cond", "select"):
        tx = amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET, seed=0)
        n = max(5, steps // m)
        with _accept_as(how, amc_lib):  # traced (and compiled) inside
          fns[(m, how)] = vmapped_scan(tx, value, params, m, n)
        steps_of[(m, how)] = n
    seconds = time_interleaved(fns, repeats)
    out[name] = {
        str(m): {
            "steps_per_scan": steps_of[(m, "cond")],
            "us_per_step_cond": seconds[(m, "cond")] / steps_of[(m, "cond")] * 1e6,
            "us_per_step_select": seconds[(m, "select")] / steps_of[(m, "select")] * 1e6,
            "cond_over_select": seconds[(m, "cond")] / seconds[(m, "select")],
        }
        for m in chains
    }
    out[name]["problem"] = problem.description
  return out


def bench_variants_and_blackjax(n_steps, repeats, temperature=1e-3):
  """The sine net: Metropolis and aMC variants side by side, and blackjax's
  random-walk Metropolis on the same target when blackjax is installed.

  Rows at T = 0: ``amc`` with epsilon 0 (the default) and 0.1, ``metropolis``.
  Rows at T = ``temperature``: ``metropolis`` and blackjax 1.x
  ``additive_step_random_walk`` with ``random_walk.normal(sigma)`` on the
  log-density ``-U/T`` (the Boltzmann distribution the Metropolis chain
  samples), each one ``lax.scan`` of ``n_steps`` steps, the data passed as an
  argument of the jitted function in both.
  """
  problem = _problems.sine(N_POINTS, HIDDEN)
  params, loss, data = problem.params, problem.loss, problem.data
  key = jax.random.key(1)
  variants = {
      "amc(sigma0), epsilon 0, T 0": amc_jax.amc(SIGMA0, n_reset=N_RESET),
      "amc(sigma0, epsilon=0.1), T 0": amc_jax.amc(SIGMA0, epsilon=EPSILON, n_reset=N_RESET),
      "metropolis(sigma0), T 0": amc_jax.metropolis(SIGMA0),
      f"metropolis(sigma0), T {temperature:g}": amc_jax.metropolis(SIGMA0, temperature=temperature),
      # The user's option: keys of XLA's RngBitGenerator instead of threefry.
      "amc(sigma0, epsilon=0.1), T 0, rbg key": amc_jax.amc(
          SIGMA0, epsilon=EPSILON, n_reset=N_RESET, seed=jax.random.key(0, impl="rbg")
      ),
      "amc(sigma0, epsilon=0.1), T 0, unsafe_rbg key": amc_jax.amc(
          SIGMA0, epsilon=EPSILON, n_reset=N_RESET, seed=jax.random.key(0, impl="unsafe_rbg")
      ),
  }
  fns = {}
  for name, tx in variants.items():
    f = scan_amc(tx, loss, n_steps)
    p, s = f(params, tx.init(params), data, key)
    fns[name] = lambda f=f, p=p, s=s: f(p, s, data, key)
  floor_fn = scan_floor(loss, n_steps)
  floor_carry = (jax.random.key(0), loss(params, data))
  fns["floor (plain JAX), T 0"] = lambda: floor_fn(params, floor_carry, data, key)
  note = None
  try:
    import blackjax  # pylint: disable=g-import-not-at-top
  except ImportError:
    note = "blackjax not installed (pip install -e '.[blackjax]')"
  else:
    note = f"blackjax {blackjax.__version__}"
    rwm_run = blackjax_rwm(loss, n_steps, temperature, SIGMA0)
    rwm_run(params, data, key)
    fns[f"blackjax RWM, T {temperature:g}"] = lambda: rwm_run(params, data, key)
  seconds = time_interleaved(fns, repeats)
  us = {k: v / n_steps * 1e6 for k, v in seconds.items()}
  eps_row = us["amc(sigma0, epsilon=0.1), T 0"]
  floor = us["floor (plain JAX), T 0"]
  table = {
      "problem": problem.description,
      "steps_per_scan": n_steps,
      "us_per_step": us,
      "ratio_to_amc_epsilon_0.1": {k: v / eps_row for k, v in us.items()},
      "ratio_to_floor": {k: v / floor for k, v in us.items()},
      "blackjax": note,
  }
  bj = f"blackjax RWM, T {temperature:g}"
  if bj in us:
    table["metropolis_over_blackjax"] = us[f"metropolis(sigma0), T {temperature:g}"] / us[bj]
  return table


def scan_floor_hot(loss, n_steps, temperature):
  """The floor of a Metropolis step at T > 0 in plain JAX: one key split, one
  normal draw, the trial point materialised once (whatever the loss), one
  evaluation, one uniform, a ``where``."""

  def run(params, rng, data):
    def body(carry, _):
      params, rng, current = carry
      rng, sub, u_key = jax.random.split(rng, 3)
      trial = floor_proposal(sub, params)
      # Materialised once before the loss reads it: a while loop of 0 trips that
      # XLA cannot see through (lax.optimization_barrier does not hold on
      # XLA:CPU, whose fusion runs after the barrier is expanded away).
      trial = jax.lax.while_loop(
          lambda c: c[0],
          lambda c: (jnp.zeros_like(c[0]), jax.tree_util.tree_map(
              lambda x: jnp.where(c[0], x, jnp.zeros_like(x)), c[1])),
          (jnp.isnan(current), trial),
      )[1]
      proposed = loss(trial, data)
      accept = jnp.log(jax.random.uniform(u_key)) < -(proposed - current) / temperature
      params = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), trial, params)
      return (params, rng, jnp.where(accept, proposed, current)), None

    return jax.lax.scan(body, (params, rng, loss(params, data)), None, length=n_steps)[0]

  return jax.jit(run)


def blackjax_rwm(loss, n_steps, temperature, sigma):
  """blackjax's random-walk Metropolis on exp(-U/T), keys split outside the loop."""
  import blackjax  # pylint: disable=g-import-not-at-top

  @jax.jit
  def run(position, data, key):
    rwm = blackjax.additive_step_random_walk(
        lambda p: -loss(p, data) / temperature,
        blackjax.mcmc.random_walk.normal(jnp.float32(sigma)),
    )

    def body(state, k):
      return rwm.step(k, state)[0], None

    return jax.lax.scan(body, rwm.init(position), jax.random.split(key, n_steps))[0]

  return run


def bench_forms(sine_steps, mlp_steps, gaussian_steps, repeats, temperature=1e-3):
  """``metropolis`` at T = ``temperature`` on each way of writing the sine net and
  the MLP (``_forms.py``), against the form's own floor and blackjax's RWM."""
  from benchmarks import _forms  # pylint: disable=g-import-not-at-top
  try:
    import blackjax  # pylint: disable=g-import-not-at-top,unused-import
    have_blackjax = True
  except ImportError:
    have_blackjax = False
  key = jax.random.key(1)
  families = {
      "sine": (_forms.sine_forms(), sine_steps),
      "mlp": (_forms.mlp_forms(), mlp_steps),
      "gaussian 1000-d": (({"energy": _forms.gaussian_1000()[:2]}, ()), gaussian_steps),
  }
  tables = {}
  for family, ((forms, data), n_steps) in families.items():
    sigma = 0.05 if family.startswith("gaussian") else SIGMA0
    t = 1.0 if family.startswith("gaussian") else temperature
    rows = {}
    for form, (params, loss) in forms.items():
      tx = amc_jax.metropolis(sigma, temperature=t)
      f = scan_amc(tx, loss, n_steps)
      state = tx.init(params)
      floor = scan_floor_hot(loss, n_steps, t)
      fns = {
          "metropolis": lambda f=f, s=state, p=params: f(p, s, data, key),
          "floor": lambda floor=floor, p=params: floor(p, key, data),
      }
      if have_blackjax:
        rwm = blackjax_rwm(loss, n_steps, t, sigma)
        fns["blackjax RWM"] = lambda rwm=rwm, p=params: rwm(p, data, key)
      seconds = time_interleaved(fns, repeats)
      us = {k: v / n_steps * 1e6 for k, v in seconds.items()}
      row = {"us_per_step": us, "metropolis_over_floor": us["metropolis"] / us["floor"]}
      if "blackjax RWM" in us:
        row["metropolis_over_blackjax"] = us["metropolis"] / us["blackjax RWM"]
      rows[form] = row
      print(f"  {family:16s} {form:22s} metropolis {us['metropolis']:8.1f} us  floor"
            f" {us['floor']:8.1f} us  ratio {row['metropolis_over_floor']:.2f}"
            + (f"  / blackjax {row['metropolis_over_blackjax']:.2f}" if have_blackjax else ""),
            flush=True)
    tables[family] = {"steps_per_scan": n_steps, "temperature": t, "sigma": sigma, "forms": rows}
  return tables


PROBLEMS = {
    "sine": lambda a: (_problems.sine(N_POINTS, HIDDEN), None, a.steps),
    "mlp": lambda a: (_problems.mlp(a.mlp_examples), None, a.mlp_steps),
    "mlp_mb": lambda a: (_problems.mlp(a.mlp_examples), a.batch, a.mlp_mb_steps),
    "deep": lambda a: (_problems.deep(a.depth), None, a.deep_steps),
    "rnn": lambda a: (_problems.rnn(a.rnn_sequences, a.rnn_length), None, a.rnn_steps),
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
  parser.add_argument("--steps", type=int, default=20_000, help="steps per scan, sine net")
  parser.add_argument("--mlp-steps", type=int, default=40)
  parser.add_argument("--mlp-mb-steps", type=int, default=400)
  parser.add_argument("--deep-steps", type=int, default=2000)
  parser.add_argument("--rnn-steps", type=int, default=40)
  parser.add_argument("--mlp-examples", type=int, default=60_000)
  parser.add_argument("--batch", type=int, default=2000)
  parser.add_argument("--depth", type=int, default=32)
  parser.add_argument("--rnn-sequences", type=int, default=1500)
  parser.add_argument("--rnn-length", type=int, default=196)
  parser.add_argument("--chains", type=int, nargs="*", default=[1, 10, 100, 1000])
  parser.add_argument("--ensemble-steps", type=int, default=2000)
  parser.add_argument("--mlp-chains", type=int, nargs="*", default=[1, 10],
                      help="vmapped MLP chains against their vmapped floor (none: skip)")
  parser.add_argument("--mlp-chain-steps", type=int, default=10)
  parser.add_argument("--mlp-chain-examples", type=int, default=None,
                      help="examples of the MLP ensembles (default: --mlp-examples)")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--variants-steps", type=int, default=5000,
                      help="steps per scan of the Metropolis/aMC variants and blackjax table (0: skip)")
  parser.add_argument("--accept-chains", type=int, nargs="*", default=[1, 10, 100],
                      help="chains for the lax.cond-vs-select table (none: skip it)")
  parser.add_argument("--accept-sine-steps", type=int, default=5000)
  parser.add_argument("--accept-mlp-steps", type=int, default=40)
  parser.add_argument("--accept-mlp-examples", type=int, default=10_000,
                      help="MLP examples in the cond-vs-select table (100 chains of 60k is minutes a step)")
  parser.add_argument("--amc-torch-dir", default=os.environ.get("AMC_TORCH_DIR"))
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
  parser.add_argument("--no-xla-workaround", action="store_true",
                      help="skip amc_jax.use_xla_cpu_workaround() (the flag for jax issue 39103)")
  parser.add_argument(
      "--out", default=str(_common.OUT / "bench_step.json")
  )
  parser.add_argument(
      "--forms", action="store_true",
      help="only the forms table: the sine net and an MLP written six ways, metropolis"
      " against each form's floor and blackjax's RWM (writes bench_step_forms.json)",
  )
  parser.add_argument("--forms-sine-steps", type=int, default=2000)
  parser.add_argument("--forms-mlp-steps", type=int, default=500)
  parser.add_argument("--forms-gaussian-steps", type=int, default=5000)
  args = parser.parse_args(argv)
  if not args.no_xla_workaround:
    amc_jax.use_xla_cpu_workaround()  # before the first computation
  if args.forms:
    print(f"metropolis against its floor per form of the loss, median of {args.repeats}")
    tables = bench_forms(args.forms_sine_steps, args.forms_mlp_steps, args.forms_gaussian_steps,
                         args.repeats)
    out = pathlib.Path(args.out)
    if out.name == "bench_step.json":
      out = out.with_name("bench_step_forms.json")
    _common.write_json(out, {"command": _common.command(), "forms": tables})
    return tables

  tables = {}
  for name in args.problems:
    problem, batch, n = PROBLEMS[name](args)
    table = bench_problem(
        problem, n, args.repeats, batch, torch_dir=False if args.no_torch else args.amc_torch_dir
    )
    tables[name] = table
    print(f"\n{name}: {table['problem']}, {table['mode']}, {n} steps per scan, median of {args.repeats}")
    print(f"{'method':36s} {'us/step':>11s} {'/ floor':>8s}")
    for k, v in table["us_per_step"].items():
      print(f"{k:36s} {v:11.1f} {table['ratio_to_floor'][k]:8.2f}")
    if ROW_TORCH not in table["us_per_step"]:
      print(f"{ROW_TORCH}: skipped ({table['torch']})")
  ensembles = bench_ensembles(args.chains, args.ensemble_steps, args.repeats) if args.chains else {}
  if ensembles:
    print(f"\nsine net, M vmapped chains, max(10, {args.ensemble_steps} * 10 / M) steps per scan")
    print(f"{'chains':>7s} {'us/step':>10s} {'chain-steps/s':>14s} {'x one chain':>12s}"
          f" {'floor us':>10s} {'/ floor':>8s}")
    for m, row in ensembles.items():
      rel = row["time_vs_one_chain"]
      print(f"{m:>7s} {row['us_per_step']:10.1f} {row['chain_steps_per_second']:14.0f} "
            f"{'' if rel is None else f'{rel:12.2f}'} {row['floor_us_per_step']:10.1f}"
            f" {row['ratio_to_vmapped_floor']:8.2f}")
  mlp_ensembles = {}
  if args.mlp_chains:
    mlp_ensembles = bench_mlp_ensembles(
        args.mlp_chains, args.mlp_chain_steps, args.mlp_chain_examples or args.mlp_examples,
        args.repeats,
    )
    print(f"\nMLP ({mlp_ensembles['problem']}), M vmapped chains against the vmapped floor")
    for m in map(str, args.mlp_chains):
      row = mlp_ensembles[m]
      print(f"{m:>7s} {row['us_per_step']:12.1f} {row['floor_us_per_step']:12.1f}"
            f" {row['ratio_to_vmapped_floor']:8.2f}")
  variants = {}
  if args.variants_steps:
    variants = bench_variants_and_blackjax(args.variants_steps, args.repeats)
    print(f"\nsine net: Metropolis and aMC variants ({variants['blackjax']}), us per step")
    print(f"{'row':46s} {'us/step':>9s} {'/ eps 0.1':>9s} {'/ floor':>8s}")
    for k, v in variants["us_per_step"].items():
      print(f"{k:46s} {v:9.1f} {variants['ratio_to_amc_epsilon_0.1'][k]:9.2f}"
            f" {variants['ratio_to_floor'][k]:8.2f}")
    if "metropolis_over_blackjax" in variants:
      print(f"amc_jax.metropolis / blackjax RWM: {variants['metropolis_over_blackjax']:.2f}")
  accept = {}
  if args.accept_chains:
    accept = bench_accept_with(
        {
            "sine": (_problems.sine(N_POINTS, HIDDEN), args.accept_sine_steps),
            "mlp": (_problems.mlp(args.accept_mlp_examples), args.accept_mlp_steps),
        },
        args.accept_chains,
        args.repeats,
    )
    print("\naccept/reject as lax.cond (default) vs select, us per step of M vmapped chains")
    print(f"{'problem':8s} {'chains':>7s} {'cond':>10s} {'select':>10s} {'cond/select':>12s}")
    for name, table in accept.items():
      for m in map(str, args.accept_chains):
        row = table[m]
        print(f"{name:8s} {m:>7s} {row['us_per_step_cond']:10.1f} {row['us_per_step_select']:10.1f}"
              f" {row['cond_over_select']:12.3f}")
  result = {
      "command": "python -m benchmarks.speed.step " + " ".join(argv if argv is not None else sys.argv[1:]),
      "hyperparameters": {"sigma0": SIGMA0, "epsilon": EPSILON, "n_reset": N_RESET, "adam_lr": 1e-3},
      "xla_cpu_workaround": not args.no_xla_workaround,
      "repeats": args.repeats,
      "tables": tables,
      "ensembles_sine": ensembles,
      "ensembles_mlp": mlp_ensembles,
      "accept_cond_vs_select": accept,
      "variants_and_blackjax": variants,
  }
  _common.write_json(args.out, result)
  return result


if __name__ == "__main__":
  main()
