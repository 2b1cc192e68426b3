"""Many proposals, replicas and populations: loss per loss evaluation and per second.

Issue 14 made Monte Carlo steps that evaluate many points at once:
``amc(..., num_proposals=K)`` (the best of K trial moves at T = 0),
``population`` (M aMC chains cloning their best), ``replica_exchange``
(parallel tempering) and ``population_annealing``. On an accelerator one
step evaluates dozens of points for about the price of one; on a CPU, K
evaluations cost (at least) K times one. This benchmark asks what the extra
evaluations buy, per evaluation and per wall second, on three problems,
against aMC with one proposal and against evosax's OpenAI-ES, SNES and CMA-ES
(when evosax is installed; otherwise those rows are skipped with a note).

Problems (every method starts from the same params and minimises the same
loss; the seeds change only the methods' random numbers):

* ``sine``: ``_problems.sine()``, the 1-30-1 tanh net of the correspondence
  paper on 1000 points of sin(2 pi theta), MSE (90 params).
* ``deep``: the depth-32 deep narrow tanh net of Fig. 6 (``bench_signal_norm
  .DeepNarrow``: 1 -> 30 x [Dense(4), tanh] -> Dense(10), tanh -> Dense(1);
  649 params, every weight and bias from N(0, 1e-4), one draw) on the step
  function of 1000 points, MSE (best constant 0.04675). The aMC-based methods
  use signal norm (Section III B; the value function also returns the
  lambdas, from the same forward pass), without which aMC does not move this
  net (``studies/signal_norm.py``); the loss is the same MSE for everyone. One
  extra row, ``aMC (signal norm off)``, shows plain aMC.
* ``rnn``: ``_problems.rnn``, the tanh RNN (hidden 32, 1186 params) reading
  binary sequences, cross-entropy on whether the first half holds more ones
  than the second, REDUCED to 128 sequences of length 64 (the speed
  benchmarks use 1500 of length 196) so that it fits the time budget.

Methods (aMC hyperparameters per problem, the same for every aMC-based
method: sine and rnn ``sigma0=1e-2, epsilon=0.1, n_reset=100``; deep
``sigma0=1e-2, epsilon=1e-2, n_reset=100, signal_norm=True``; not tuned):

* ``aMC``: ``amc_jax.amc`` in batch mode, K = 1.
* ``aMC K=4/16/64``: ``amc(..., num_proposals=K)`` at T = 0: the best of K
  trial moves, accepted iff not worse. A step counts once towards
  ``n_reset``, so per evaluation sigma shrinks K times more slowly.
* ``population``: ``amc_jax.population(amc(...), every, fraction=0.25)``
  with M = 16 chains; ``every`` = 1/20 of the run's steps (20 cloning rounds).
* ``replica exchange``: ``amc_jax.replica_exchange(amc(...), temperatures)``
  with R = 8 replicas, ladder ``(0,) + geomspace(1e-6 L0, 1e-2 L0, 7)`` (L0
  the initial loss), swaps every step; the answer is the replica at T = 0
  (``coldest_replica``), whose loss never rises (a swap into T = 0 is
  accepted iff it brings a lower loss).
* ``population annealing``: ``amc_jax.population_annealing(amc(...),
  temperatures, steps_per_temperature)`` with M = 16 replicas, 10 stages
  ``geomspace(1e-2 L0, 1e-6 L0, 10)``, ``steps_per_temperature`` = 1/10 of
  the run's steps; the answer is the best replica. The population starts as
  M copies of the initial params (not drawn at the first temperature).
* evosax (>= 0.3) ``Open_ES`` (antithetic, centred ranks, ``optax.adam(1e-2)``,
  constant std 1e-2: the "scaled" variant of ``studies/evosax.py``, since the
  library defaults barely move these nets), ``SNES`` and ``CMA_ES`` (library
  defaults, std_init 1.0), population P = 128, one ``ask``/``vmap(loss)``/
  ``tell`` per generation (``bench_evosax.evosax_method``). Loss reported: the
  best population member so far (``state.best_fitness``); the loss of the
  distribution mean at the end is recorded too.

Evaluations are counted as computed: batch-mode aMC 1 per step plus 1 for
the first U(x); K proposals at T = 0 K per step (+1); population / replica
exchange / population annealing the number of chains per step (+ one per
chain for the first U(x)) plus M at each cloning or resampling round (the
copies' losses are re-evaluated, and the library evaluates every chain there,
not only the copies); ES P per generation. Every method gets the same budget
of evaluations per problem (``--budget-*``); each runs the largest number of
steps that fits. ``--quick`` counts the evaluations actually made (a
``jax.debug.callback`` in the loss) and records them beside the formula.

Each method runs as one jitted ``lax.fori_loop`` with a dynamic trip count,
called once per logging row (rows log-spaced in steps); the wall time is the
sum of those calls, each blocked on, after a warm-up call that compiles
(compilation excluded, recorded separately). Seeds run one after another.
The loss curve is the best loss so far at each row. The threshold of a
problem is the aMC (K = 1) median best loss at half the budget (the last row
at or before it): "evaluations to threshold" says how many evaluations each
method needed to get where plain aMC is halfway through (aMC itself needs
about half the budget by construction); its resolution is the row spacing.

Per-step cost of K = 64 against K = 1: the median of interleaved repeats
(``_common.interleaved_times``) of the two compiled loops, per step. On a CPU
the 64 evaluations of a K = 64 step cost about 64 times one (more, in these
runs: the vmapped evaluation is less efficient per point); on an accelerator
the ratio is the figure that decides whether K proposals per step pay.

Each finished (problem, method) group is checkpointed as its own JSON in
``--out-dir``/``bench_parallel.partial/``; a rerun with the same configuration
skips the groups found there (``--fresh`` ignores them); the directory is
removed once the final JSON is written.

  python -m benchmarks.studies.parallel [--quick] [--out-dir DIR] [--fresh]

Writes ``bench_parallel.json`` and ``bench_parallel.png`` (best loss vs
evaluations and vs wall seconds per problem, one line per method, median bold,
seeds faint) into ``--out-dir`` (default ``benchmarks/results``). ``--quick``
(the smoke test): tiny problems and budgets, one seed, XLA optimisation
level 0. ``--plot-from FILE.json`` only redraws the plot of a JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import threading
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

from benchmarks import _common
from benchmarks.paper import _paper

NAME = "bench_parallel"
PROBLEMS = ("sine", "deep", "rnn")
METHODS = ("aMC", "aMC K=4", "aMC K=16", "aMC K=64", "population", "replica exchange",
           "population annealing", "OpenES", "SNES", "CMA-ES", "aMC (signal norm off)")
ES_METHODS = ("OpenES", "SNES", "CMA-ES")
NO_EVOSAX = ("evosax is not importable (pip install 'amc_jax[evosax]' or 'evosax>=0.3'): "
             "the OpenES, SNES and CMA-ES rows are skipped.")
PA_STAGES = 10
CLONING_ROUNDS = 20
RE_T_RANGE = (1e-6, 1e-2)  # x the initial loss

QUICK_HELP = "smoke test: tiny problems and budgets, one seed, XLA optimisation level 0"


def parse_args(argv=None):
  p = _common.parser(__doc__, quick=QUICK_HELP, resumable=True)
  p.add_argument("--problems", nargs="+", choices=PROBLEMS, default=None,
                 help="(full: all; quick: sine)")
  p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
  p.add_argument("--seeds", type=int, default=None, help="(full 3, quick 1)")
  p.add_argument("--budget-sine", type=int, default=None,
                 help="loss evaluations per run on the sine net (full 80000, quick 600)")
  p.add_argument("--budget-deep", type=int, default=None, help="(full 20000, quick 600)")
  p.add_argument("--budget-rnn", type=int, default=None, help="(full 8000, quick 600)")
  p.add_argument("--depth", type=int, default=None, help="deep net depth (full 32, quick 4)")
  p.add_argument("--rnn-sequences", type=int, default=None, help="(full 128, quick 16)")
  p.add_argument("--rnn-length", type=int, default=None, help="(full 64, quick 8)")
  p.add_argument("--rnn-hidden", type=int, default=None, help="(full 32, quick 8)")
  p.add_argument("--chains", type=int, default=16, help="M of population and population annealing")
  p.add_argument("--replicas", type=int, default=8, help="R of replica exchange")
  p.add_argument("--es-popsize", type=int, default=None,
                 help="evosax population size, even (full 128, quick 16)")
  p.add_argument("--rows", type=int, default=None, help="log-spaced logging rows (full 50, quick 6)")
  p.add_argument("--cost-repeats", type=int, default=None,
                 help="interleaved repeats of the K=64 / K=1 step-cost measurement (full 7, quick 1)")
  p.add_argument("--count-evaluations", action=argparse.BooleanOptionalAction, default=None,
                 help="count the evaluations made with a host callback in the loss (slow; "
                      "default on with --quick only)")
  p.add_argument("--blas-threads", type=int, default=1,
                 help="OPENBLAS_NUM_THREADS for CMA-ES's eigh (0: leave it alone)")
  args = p.parse_args(argv)
  full = dict(seeds=3, es_popsize=128, budget_sine=80000, budget_deep=20000, budget_rnn=8000,
              depth=32, rnn_sequences=128, rnn_length=64, rnn_hidden=32, rows=50, cost_repeats=7,
              count_evaluations=False)
  quick = dict(seeds=1, es_popsize=16, budget_sine=600, budget_deep=600, budget_rnn=600, depth=4,
               rnn_sequences=16, rnn_length=8, rnn_hidden=8, rows=6, cost_repeats=1,
               count_evaluations=True)
  for k, v in (quick if args.quick else full).items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.problems is None:
    args.problems = ["sine"] if args.quick else list(PROBLEMS)
  if args.es_popsize < 2 or args.es_popsize % 2:
    p.error("--es-popsize must be even and >= 2 (OpenAI-ES samples antithetic pairs)")
  if args.chains < 4:
    p.error("--chains must be >= 4 (population clones a quarter of them)")
  if args.replicas < 2:
    p.error("--replicas must be >= 2")
  return args


def config_of(args) -> dict:
  """What a checkpointed group must share with this run to be reused."""
  return {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
          if k not in ("out_dir", "fresh", "problems", "methods", "no_plot", "plot_from")}


def library_commit() -> dict:
  """The repository's commit, and whether amc_jax/ differed from it, when the run started."""
  git = lambda *a: subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True,
                                  check=False).stdout.strip()
  try:
    return {"commit": git("rev-parse", "HEAD") or None,
            "amc_jax_modified": bool(git("status", "--porcelain", "amc_jax"))}
  except OSError:
    return {"commit": None, "amc_jax_modified": None}


def budget_of(args, problem: str) -> int:
  return getattr(args, f"budget_{problem}")


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


class Counter:
  """Loss evaluations actually computed, counted by a host callback in the loss.

  Under ``vmap`` the callback runs once per element, possibly from several
  threads at once: hence the lock.
  """

  def __init__(self):
    self.n = 0
    self.lock = threading.Lock()

  def wrap(self, fn):
    import jax

    def counted(p):
      out = fn(p)
      loss = out[0] if isinstance(out, tuple) else out
      jax.debug.callback(self._add, loss)
      return out

    return counted

  def _add(self, loss):
    with self.lock:
      self.n += int(np.size(loss))

  def reset(self) -> None:
    import jax

    jax.effects_barrier()
    with self.lock:
      self.n = 0

  def read(self) -> int:
    import jax

    jax.effects_barrier()
    with self.lock:
      return self.n


def make_problem(name: str, args) -> dict:
  """``{loss, value_fn, params, amc: kwargs, description, ...}`` of one problem.

  ``loss(params)`` is the scalar loss every method minimises; ``value_fn`` is
  what aMC evaluates (the same loss, plus the signal-norm lambdas on the deep
  net).
  """
  import jax
  import jax.numpy as jnp

  from benchmarks import _problems
  import amc_jax

  if name == "sine":
    n_points, hidden = (1000, 30) if not args.quick else (100, 8)
    prob = _problems.sine(n_points, hidden)
    loss = lambda p: prob.loss(p, prob.data)
    out = dict(params=prob.params, loss=loss, value_fn=loss,
               amc=dict(sigma0=1e-2, epsilon=0.1, n_reset=100, signal_norm=False),
               description=prob.description + ", MSE, _problems.sine (init 0.1 N(0, 1))")
  elif name == "deep":
    model = _problems.DeepNarrow(args.depth)
    theta, target = _problems.deep_problem()
    params = model.init(jax.random.key(0), theta[:1])["params"]
    mse = _problems.mse
    loss = lambda p: mse(model.apply({"params": p}, theta), target)
    sn = amc_jax.signal_norm_value_fn(model, mse)
    out = dict(params=params, loss=loss, value_fn=lambda p: sn(p, theta, target),
               amc=dict(sigma0=1e-2, epsilon=1e-2, n_reset=100, signal_norm=True),
               description=(f"deep narrow tanh net, depth {args.depth}: 1 -> {args.depth - 2} x "
                            "[Dense(4), tanh] -> Dense(10), tanh -> Dense(1) "
                            "(_problems.DeepNarrow), every weight and bias ~ N(0, 1e-4) "
                            "(one draw, key 0), 1000 points theta = i/1000, target 0.5 on "
                            "(0.5, 0.75) else 0, MSE"),
               baseline_mse_best_constant=float(jnp.var(target)))
  elif name == "rnn":
    prob = _problems.rnn(args.rnn_sequences, args.rnn_length, args.rnn_hidden)
    loss = lambda p: prob.loss(p, prob.data)
    out = dict(params=prob.params, loss=loss, value_fn=loss,
               amc=dict(sigma0=1e-2, epsilon=0.1, n_reset=100, signal_norm=False),
               description=prob.description + " (_problems.rnn, reduced: the speed benchmarks "
                           "use 1500 sequences of length 196), full batch")
  else:
    raise ValueError(name)
  out["n_params"] = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(out["params"])))
  out["initial_loss"] = float(jax.jit(out["loss"])(out["params"]))
  return out


# ---------------------------------------------------------------------------
# Methods: each is {init(seed) -> carry, advance(carry, n) -> carry (jitted),
# best(carry), extra(carry), evaluations(steps), steps, description}
# ---------------------------------------------------------------------------


def largest_steps(evaluations, budget: int) -> int:
  """The largest number of steps whose evaluation count fits the budget."""
  lo, hi = 0, budget
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if evaluations(mid) <= budget:
      lo = mid
    else:
      hi = mid - 1
  return lo


def amc_call(kw: dict, **extra) -> str:
  sn = ", signal_norm=True" if kw["signal_norm"] else ""
  more = "".join(f", {k}={v}" for k, v in extra.items())
  return f"amc({kw['sigma0']:g}, epsilon={kw['epsilon']:g}, n_reset={kw['n_reset']}{sn}{more})"


def single_chain(prob: dict, value_fn, k: int, signal_norm: bool) -> dict:
  import jax
  import jax.numpy as jnp
  import optax

  import amc_jax

  kw = dict(prob["amc"], signal_norm=signal_norm)
  make = lambda seed: amc_jax.amc(kw["sigma0"], epsilon=kw["epsilon"], n_reset=kw["n_reset"],
                                  num_proposals=k, signal_norm=signal_norm, seed=seed)
  tx = make(0)  # the seed enters tx.init only: one compiled loop for every seed

  def body(_, carry):
    params, state, best = carry
    updates, state = tx.update(None, state, params, value_fn=value_fn)
    return optax.apply_updates(params, updates), state, jnp.minimum(best, state.loss)

  params = prob["params"]
  return {
      "init": lambda seed: (params, make(seed).init(params), jnp.asarray(jnp.inf, jnp.float32)),
      "advance": jax.jit(lambda carry, n: jax.lax.fori_loop(0, n, body, carry)),
      "best": lambda carry: carry[2],
      "extra": lambda carry: {"sigma": carry[1].sigma,
                              "acceptance": carry[1].n_accept / jnp.maximum(carry[1].count, 1)},
      "evaluations": lambda s: 0 if s == 0 else 1 + k * s,
      "evaluations_rule": f"1 + {k} per step" if k > 1 else "1 + 1 per step (batch mode)",
      "call": "amc_jax." + amc_call(kw, **({"num_proposals": k} if k > 1 else {})),
  }


def replicated(prob: dict, value_fn, kind: str, args, budget: int) -> dict:
  """population / replica exchange / population annealing of the problem's aMC."""
  import jax
  import jax.numpy as jnp
  import optax

  import amc_jax

  kw = prob["amc"]
  inner = amc_jax.amc(kw["sigma0"], epsilon=kw["epsilon"], n_reset=kw["n_reset"],
                      signal_norm=kw["signal_norm"])
  l0 = prob["initial_loss"]
  if kind == "population":
    m = args.chains
    rough = largest_steps(lambda s: 0 if s == 0 else m + m * s, budget)
    every = max(1, rough // CLONING_ROUNDS)
    evaluations = lambda s: 0 if s == 0 else m + m * s + m * (s // every)
    steps = largest_steps(evaluations, budget)
    make = lambda seed: amc_jax.population(inner, every=every, fraction=0.25, seed=seed)
    call = f"amc_jax.population(amc_jax.{amc_call(kw)}, every={every}, fraction=0.25), M={m}"
    rule = f"{m} + {m} per step + {m} per cloning round (every {every} steps)"
    hyper = {"M": m, "every": every, "fraction": 0.25}
    answer = lambda state, losses: jnp.min(losses)
    extra = lambda state: {"n_cloned": state.n_cloned}
  elif kind == "replica exchange":
    m = args.replicas
    ladder = [0.0] + [float(t) for t in np.geomspace(RE_T_RANGE[0] * l0, RE_T_RANGE[1] * l0, m - 1)]
    evaluations = lambda s: 0 if s == 0 else m + m * s
    steps = largest_steps(evaluations, budget)
    make = lambda seed: amc_jax.replica_exchange(inner, ladder, swap_every=1, seed=seed)
    call = (f"amc_jax.replica_exchange(amc_jax.{amc_call(kw)}, temperatures=(0,) + "
            f"geomspace({RE_T_RANGE[0]:g} L0, {RE_T_RANGE[1]:g} L0, {m - 1}), swap_every=1), "
            f"L0 = {l0:.4g}")
    rule = f"{m} + {m} per step"
    hyper = {"R": m, "temperatures": ladder, "swap_every": 1}
    answer = lambda state, losses: losses[jnp.argmin(state.temperature_index)]
    extra = lambda state: {"swap_acceptance": state.swap_acceptance}
  elif kind == "population annealing":
    m = args.chains
    ladder = [float(t) for t in np.geomspace(RE_T_RANGE[1] * l0, RE_T_RANGE[0] * l0, PA_STAGES)]
    rough = largest_steps(lambda s: 0 if s == 0 else m + m * s + m * (PA_STAGES - 1), budget)
    spt = max(1, rough // PA_STAGES)
    evaluations = lambda s: 0 if s == 0 else m + m * s + m * min(s // spt, PA_STAGES - 1)
    steps = largest_steps(evaluations, budget)
    make = lambda seed: amc_jax.population_annealing(inner, ladder, steps_per_temperature=spt,
                                                     seed=seed)
    call = (f"amc_jax.population_annealing(amc_jax.{amc_call(kw)}, temperatures=geomspace("
            f"{RE_T_RANGE[1]:g} L0, {RE_T_RANGE[0]:g} L0, {PA_STAGES}), steps_per_temperature="
            f"{spt}), M={m}, L0 = {l0:.4g}")
    rule = f"{m} + {m} per step + {m} per resampling ({PA_STAGES - 1} of them, every {spt} steps)"
    hyper = {"M": m, "temperatures": ladder, "steps_per_temperature": spt}
    answer = lambda state, losses: jnp.min(losses)
    extra = lambda state: {"log_z": state.log_z, "temperature": state.temperature}
  else:
    raise ValueError(kind)
  tx = make(0)

  def body(_, carry):
    params, state, best = carry
    updates, state = tx.update(None, state, params, value_fn=value_fn)
    losses = amc_jax.monte_carlo_state(state.inner).loss
    return optax.apply_updates(params, updates), state, jnp.minimum(best, answer(state, losses))

  params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), prob["params"])

  def all_extra(carry):
    mc = amc_jax.monte_carlo_state(carry[1].inner)
    return {"sigma_median": jnp.median(mc.sigma),
            "acceptance_mean": jnp.mean(mc.n_accept / jnp.maximum(mc.count, 1)),
            **extra(carry[1])}

  return {
      "init": lambda seed: (params, make(seed).init(params), jnp.asarray(jnp.inf, jnp.float32)),
      "advance": jax.jit(lambda carry, n: jax.lax.fori_loop(0, n, body, carry)),
      "best": lambda carry: carry[2],
      "extra": all_extra,
      "evaluations": evaluations,
      "evaluations_rule": rule,
      "call": call,
      "hyperparameters": hyper,
      "steps": steps,
  }


def evosax_es(prob: dict, loss, kind: str, args) -> dict:
  import jax.numpy as jnp
  import optax
  from evosax.algorithms import CMA_ES, SNES, Open_ES

  from benchmarks import _evosax  # the same ask / vmap(loss) / tell loop

  p, params = args.es_popsize, prob["params"]
  if kind == "OpenES":
    es = Open_ES(p, params, optimizer=optax.adam(1e-2),
                 std_schedule=optax.constant_schedule(1e-2))
    call = (f"evosax Open_ES({p}, optimizer=optax.adam(1e-2), std_schedule=constant(1e-2)), "
            "antithetic, centred ranks")
  elif kind == "SNES":
    es = SNES(p, params)
    call = f"evosax SNES({p}) defaults (std_init 1.0, sgd(1.0), weights fitness shaping)"
  else:
    es = CMA_ES(p, params)
    call = f"evosax CMA_ES({p}) defaults (std_init 1.0, Hansen's weights and rates)"
  m = _evosax.evosax_method(es, es.default_params, loss, params)
  return {
      "init": m["init"],
      "advance": m["advance"],
      "best": lambda carry: carry[0].best_fitness,
      "extra": lambda carry: {"mean_loss": m["mean_loss"](carry),
                              "std_mean": jnp.mean(carry[0].std)},
      "evaluations": lambda s: p * s,
      "evaluations_rule": f"{p} per generation",
      "call": call,
      "hyperparameters": {"P": p},
  }


def make_method(name: str, prob: dict, args, budget: int, counter=None) -> dict:
  value_fn, loss = prob["value_fn"], prob["loss"]
  if counter is not None and name not in ES_METHODS:
    value_fn, loss = counter.wrap(value_fn), counter.wrap(loss)
  if name == "aMC":
    m = single_chain(prob, value_fn, 1, prob["amc"]["signal_norm"])
  elif name == "aMC (signal norm off)":
    m = single_chain(prob, loss, 1, False)
  elif name.startswith("aMC K="):
    m = single_chain(prob, value_fn, int(name.split("=")[1]), prob["amc"]["signal_norm"])
  elif name in ("population", "replica exchange", "population annealing"):
    m = replicated(prob, value_fn, name, args, budget)
  elif name in ES_METHODS:
    m = evosax_es(prob, loss, name, args)
  else:
    raise ValueError(name)
  if "steps" not in m:
    m["steps"] = largest_steps(m["evaluations"], budget)
  return m


def planned(problem: str, args) -> list[str]:
  return [m for m in METHODS if m in args.methods
          and (m != "aMC (signal norm off)" or problem == "deep")]


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def row_ends(total: int, rows: int) -> list[int]:
  from benchmarks import _evosax

  return _evosax.row_ends(total, rows)


def run_group(problem: str, name: str, prob: dict, args) -> dict:
  """Every seed of one method on one problem: curves, finals, wall times."""
  import jax

  from benchmarks import _evosax

  budget = budget_of(args, problem)
  # ES loops are one vmap(loss) over P per generation by construction, and a
  # host callback per population member would dominate their time: not counted.
  counter = Counter() if args.count_evaluations and name not in ES_METHODS else None
  method = make_method(name, prob, args, budget, counter)
  steps = method["steps"]
  ends = row_ends(steps, args.rows)
  t0 = time.perf_counter()
  # Compile and warm up: twice, since evosax's state changes its types (weak
  # types) after the first call, which would otherwise compile again inside
  # the timed run.
  jax.block_until_ready(method["advance"](method["advance"](method["init"](0), 1), 1))
  compile_s = time.perf_counter() - t0
  compiled = method["advance"]._cache_size()
  counted = []
  seeds = []
  for seed in range(args.seeds):
    if counter is not None:
      counter.reset()
    carry = method["init"](seed)
    seconds, best = [], []
    for carry, elapsed in _evosax.timed_rows(method["advance"], carry, ends):
      seconds.append(elapsed)
      best.append(float(method["best"](carry)))
    if counter is not None:
      counted.append(counter.read())
    extra = {k: np.asarray(v).tolist() for k, v in jax.device_get(method["extra"](carry)).items()}
    seeds.append({"seconds": seconds, "best_loss": best, "extra": extra})
    print(f"  {problem:5s} {name:22s} seed {seed}: best {best[-1]:.4g} in {elapsed:.1f} s",
          flush=True)
  recompiled = method["advance"]._cache_size() - compiled  # 0: nothing compiled while timed
  evaluations = [method["evaluations"](e) for e in ends]
  finals = [s["best_loss"][-1] for s in seeds]
  walls = [s["seconds"][-1] for s in seeds]
  rec = {
      "problem": problem, "method": name, "call": method["call"],
      "hyperparameters": method.get("hyperparameters"),
      "evaluations_rule": method["evaluations_rule"],
      "budget": budget, "steps": steps, "evaluations_used": evaluations[-1],
      "seeds": args.seeds, "compile_and_warmup_s": compile_s,
      "compilations_while_timed": recompiled,
      "step_ends": ends, "evaluations": evaluations,
      "best_loss": [s["best_loss"] for s in seeds], "seconds": [s["seconds"] for s in seeds],
      "final_best_loss": finals, "median_final_best_loss": statistics.median(finals),
      "wall_s": walls, "median_wall_s": statistics.median(walls),
      "us_per_evaluation": 1e6 * statistics.median(walls) / max(evaluations[-1], 1),
      "extra": [s["extra"] for s in seeds],
      "load_average_after": list(os.getloadavg()),
  }
  if counter is not None:
    rec["evaluations_counted"] = counted  # from the host callback, per seed
  if counter is None:
    _BUILT[(problem, name)] = method
  if name == "aMC K=64":
    rec["step_cost"] = step_cost(problem, prob, args, budget)
  return rec


_BUILT = {}  # (problem, method) -> method built without a counter, in this process


def step_cost(problem: str, prob: dict, args, budget: int) -> dict:
  """Per-step wall time of K = 64 against K = 1, interleaved repeats (the
  loops of the runs when built in this process, without counting callbacks)."""

  import jax

  built = lambda name: _BUILT.get((problem, name)) or make_method(name, prob, args, budget)
  k1, k64 = built("aMC"), built("aMC K=64")
  c1 = jax.block_until_ready(k1["advance"](k1["init"](0), 1))
  c64 = jax.block_until_ready(k64["advance"](k64["init"](0), 1))
  # Steps per call: about call_s seconds each, from one probe call of each.
  call_s = 0.03 if args.quick else 0.3
  t1 = _common.interleaved_times({"probe": lambda: k1["advance"](c1, 16)}, 1)[0]["probe"] / 16
  t64 = _common.interleaved_times({"probe": lambda: k64["advance"](c64, 1)}, 1)[0]["probe"]
  n64 = max(1, min(64, int(round(call_s / max(t64, 1e-6)))))
  n1 = max(1, min(100000, int(round(call_s / max(t1, 1e-6)))))
  medians, samples = _common.interleaved_times(
      {"K=1": lambda: k1["advance"](c1, n1), "K=64": lambda: k64["advance"](c64, n64)},
      args.cost_repeats)
  per1, per64 = medians["K=1"] / n1, medians["K=64"] / n64
  out = {"steps_per_call": {"K=1": n1, "K=64": n64}, "repeats": args.cost_repeats,
         "s_per_step_median": {"K=1": per1, "K=64": per64}, "ratio_k64_over_k1": per64 / per1,
         "ratio_per_evaluation": per64 / per1 / 64,
         "samples_s": samples, "device": str(jax.devices()[0]),
         "note": ("on this CPU the 64 evaluations of a K=64 step cost about 64x one (ratio "
                  "~64, or more); on an accelerator that evaluates them in parallel the ratio "
                  "is what matters"), "load_average_after": list(os.getloadavg())}
  print(f"  {'':5s} step cost K=64 / K=1 = {out['ratio_k64_over_k1']:.1f} "
        f"({1e3 * per1:.3f} vs {1e3 * per64:.3f} ms/step)", flush=True)
  return out


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def threshold_of(groups: dict, problem: str) -> "dict | None":
  """The aMC (K = 1) median best loss at the last row at or before half its budget."""
  g = groups.get(f"{problem}/aMC")
  if g is None:
    return None
  ev = np.asarray(g["evaluations"])
  i = int(np.flatnonzero(ev <= g["budget"] / 2)[-1]) if np.any(ev <= g["budget"] / 2) else 0
  value = float(np.median(np.asarray(g["best_loss"], np.float64)[:, i]))
  return {"value": value, "at_evaluations": int(ev[i]),
          "rule": "median over seeds of aMC (K=1)'s best loss at the last logged row at or "
                  "before half the budget"}


def to_threshold(g: dict, value: float) -> tuple[list, list]:
  """Per seed: evaluations and wall seconds at the first row with best loss <= value."""
  evs, secs = [], []
  for best, sec in zip(g["best_loss"], g["seconds"]):
    hit = np.flatnonzero(np.asarray(best, np.float64) <= value)
    evs.append(int(g["evaluations"][hit[0]]) if hit.size else None)
    secs.append(float(sec[hit[0]]) if hit.size else None)
  return evs, secs


def median_with_never(values: list) -> "float | None":
  """Median with None as +inf; None if the median is never reached."""
  x = sorted(np.inf if v is None else v for v in values)
  m = float(np.median(x)) if x else np.inf
  return None if not np.isfinite(m) else m


def summarize(groups: dict, problems: list[str]) -> dict:
  out = {}
  for problem in problems:
    thr = threshold_of(groups, problem)
    rows = []
    for key, g in groups.items():
      if g["problem"] != problem:
        continue
      row = {"method": g["method"], "evaluations_used": g["evaluations_used"],
             "steps": g["steps"], "seeds": g["seeds"],
             "median_final_best_loss": g["median_final_best_loss"],
             "min_final_best_loss": min(g["final_best_loss"]),
             "max_final_best_loss": max(g["final_best_loss"]),
             "median_wall_s": g["median_wall_s"], "us_per_evaluation": g["us_per_evaluation"]}
      if thr is not None:
        evs, secs = to_threshold(g, thr["value"])
        row.update(evaluations_to_threshold=evs, wall_s_to_threshold=secs,
                   reached=sum(e is not None for e in evs),
                   median_evaluations_to_threshold=median_with_never(evs),
                   median_wall_s_to_threshold=median_with_never(secs))
      rows.append(row)
    cost = groups.get(f"{problem}/aMC K=64", {}).get("step_cost")
    out[problem] = {"threshold": thr, "rows": rows,
                    "step_cost_k64_over_k1": None if cost is None else cost["ratio_k64_over_k1"]}
  return out


def format_table(summary: dict, infos: dict) -> str:
  fmt = lambda v, spec: "never" if v is None else format(v, spec)
  lines = []
  for problem, s in summary.items():
    thr = s["threshold"]
    info = infos.get(problem, {})
    lines.append(f"{problem}: {info.get('description', '')}")
    lines.append(f"  budget {info.get('budget')} evaluations; threshold "
                 + ("none (no aMC row)" if thr is None else
                    f"{thr['value']:.4g} (aMC K=1 median at {thr['at_evaluations']} evaluations)")
                 + ("" if s["step_cost_k64_over_k1"] is None else
                    f"; step cost K=64 / K=1 = {s['step_cost_k64_over_k1']:.1f}"))
    lines.append(f"  {'method':22s} {'evals':>7s} {'median final':>12s} {'(min':>10s} "
                 f"{'max)':>10s} {'evals to thr':>12s} {'reached':>7s} {'wall to thr':>11s} "
                 f"{'wall s':>7s} {'us/eval':>8s}")
    for r in s["rows"]:
      lines.append(
          f"  {r['method']:22s} {r['evaluations_used']:7d} {r['median_final_best_loss']:12.4g} "
          f"{r['min_final_best_loss']:10.3g} {r['max_final_best_loss']:10.3g} "
          f"{fmt(r.get('median_evaluations_to_threshold'), '12.0f'):>12s} "
          f"{r.get('reached', 0):3d}/{r['seeds']:<3d} "
          f"{fmt(r.get('median_wall_s_to_threshold'), '11.2f'):>11s} "
          f"{r['median_wall_s']:7.1f} {r['us_per_evaluation']:8.1f}")
    lines.append("")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


STYLE = {
    "aMC": ("k", "-"), "aMC K=4": ("tab:blue", "-"), "aMC K=16": ("tab:cyan", "-"),
    "aMC K=64": ("tab:purple", "-"), "population": ("tab:green", "--"),
    "replica exchange": ("tab:red", "--"), "population annealing": ("tab:orange", "--"),
    "OpenES": ("tab:brown", ":"), "SNES": ("tab:pink", ":"), "CMA-ES": ("tab:olive", ":"),
    "aMC (signal norm off)": ("0.5", "-."),
}


def plot(record: dict, path: pathlib.Path) -> None:
  plt = _paper.pyplot()
  groups = record["groups"]
  problems = [p for p in PROBLEMS if any(g["problem"] == p for g in groups.values())]
  fig, axes = plt.subplots(2, len(problems), figsize=(5.6 * len(problems), 8.4), squeeze=False)
  for j, problem in enumerate(problems):
    thr = (record["summary"].get(problem) or {}).get("threshold")
    for i, xkey in enumerate(("evaluations", "seconds")):
      ax = axes[i][j]
      for name in METHODS:
        g = groups.get(f"{problem}/{name}")
        if g is None:
          continue
        color, ls = STYLE[name]
        ys = np.asarray(g["best_loss"], np.float64)
        if xkey == "evaluations":
          xs = np.broadcast_to(np.asarray(g["evaluations"], np.float64), ys.shape)
        else:
          xs = np.asarray(g["seconds"], np.float64)
        for x, y in zip(xs, ys):
          ax.plot(x, y, color=color, ls=ls, lw=0.7, alpha=0.3)
        ax.plot(np.median(xs, 0), np.median(ys, 0), color=color, ls=ls, lw=1.8, label=name)
      if thr is not None:
        ax.axhline(thr["value"], color="0.4", lw=0.8, ls=":")
      base = record["info"].get(problem, {}).get("baseline_mse_best_constant")
      if base is not None:
        ax.axhline(base, color="0.6", lw=0.8, ls="--")
      ax.set(xscale="log", yscale="log",
             xlabel="loss evaluations" if xkey == "evaluations" else "wall seconds (compile excluded)",
             ylabel="best loss so far")
      if i == 0:
        ax.set_title(f"{problem}: {record['info'].get(problem, {}).get('short', '')}", fontsize=9)
      ax.grid(True, which="major", alpha=0.3)
    axes[0][j].legend(fontsize=6.5)
  fig.suptitle("bench_parallel: median over seeds bold, each seed faint\ndotted: threshold "
               "(aMC K=1 median at half the budget); dashed: best constant", fontsize=10)
  _common.save_figure(fig, path)


def main(argv=None):
  args = parse_args(argv)
  if _common.replot(args.plot_from, plot):
    return None
  commit = library_commit()
  run = _common.start(args)  # load average, --quick compile, the XLA:CPU workaround
  t_start, load_start, workaround = run.start, run.load_start, run.workaround
  if args.blas_threads > 0:  # read when CMA-ES's first eigh loads OpenBLAS
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
  import jax

  try:
    import evosax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import importlib.metadata

    evosax_version = importlib.metadata.version("evosax")
  except ImportError:
    evosax_version = None
    print(NO_EVOSAX)
  methods = [m for m in args.methods if evosax_version is not None or m not in ES_METHODS]

  out_dir = pathlib.Path(args.out_dir)
  partial_dir = out_dir / f"{NAME}.partial"
  partial_dir.mkdir(parents=True, exist_ok=True)
  config = config_of(args)
  groups, infos = {}, {}
  for problem in [p for p in PROBLEMS if p in args.problems]:
    prob = None
    for name in [m for m in planned(problem, args) if m in methods]:
      key = f"{problem}/{name}"
      path = partial_dir / (key.replace("/", "__").replace(" ", "_").replace("=", "") + ".json")
      if path.exists() and not args.fresh:
        saved = json.loads(path.read_text())
        if saved.get("config") == config:
          groups[key], infos[problem] = saved["group"], saved["info"]
          print(f"resuming {key} from {path}", flush=True)
          continue
        print(f"{path} was written with another configuration: redoing {key}", flush=True)
      if prob is None:
        prob = make_problem(problem, args)
        infos[problem] = {
            "description": prob["description"], "n_params": prob["n_params"],
            "initial_loss": prob["initial_loss"], "budget": budget_of(args, problem),
            "amc": prob["amc"], "short": f"{prob['n_params']} params, "
                                         f"{budget_of(args, problem)} evaluations",
            **({"baseline_mse_best_constant": prob["baseline_mse_best_constant"]}
               if "baseline_mse_best_constant" in prob else {})}
        print(f"{problem}: {prob['description']}; {prob['n_params']} params, initial loss "
              f"{prob['initial_loss']:.4g}", flush=True)
      t0 = time.perf_counter()
      rec = _common.jsonable(run_group(problem, name, prob, args))
      rec["group_wall_s"] = time.perf_counter() - t0
      groups[key] = rec
      _common.write_json(path, {"config": config, "info": _common.jsonable(infos[problem]),
                                "group": rec})

  problems = [p for p in PROBLEMS if p in args.problems]
  summary = summarize(groups, problems)
  table = format_table(summary, infos)
  print(table)
  notes = []
  if evosax_version is None:
    notes.append(NO_EVOSAX)
  notes.append("On a CPU the K evaluations of a K-proposal step (and the M of a population "
               "step) cost about K (M) times one; step_cost.ratio_k64_over_k1 is the measured "
               "per-step cost of K=64 against K=1 here, the figure that matters on an "
               "accelerator.")
  wall = time.perf_counter() - t_start
  record = {
      "command": _paper.command(),
      "quick": bool(args.quick),
      "config": config,
      "evosax_version": evosax_version,
      "xla_cpu_workaround": workaround,
      "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
      "info": infos,
      "notes": notes,
      "wall_s_this_invocation": wall,
      "wall_s_groups_total": float(sum(g.get("group_wall_s", 0.0) for g in groups.values())),
      "load_average_start": load_start,
      "load_average_end": list(os.getloadavg()),
      "jax_version": jax.__version__,
      "library_at_start": commit,
      "summary": summary,
      "table": table,
      "groups": groups,
  }
  _common.write_and_plot(out_dir, NAME, record, plot, args.no_plot)
  shutil.rmtree(partial_dir, ignore_errors=True)
  print(f"total {wall:.0f}s this invocation, {record['wall_s_groups_total']:.0f}s in the groups")
  return record


if __name__ == "__main__":
  main()
