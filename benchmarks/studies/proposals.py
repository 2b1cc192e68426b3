"""Designed trial moves against aMC's Gaussian move: the claim, measured.

``amc_jax.amc(..., proposal=...)`` takes any move of ``amc_jax.proposals``.
This benchmark asks whether a designed move trains faster than the paper's
Gaussian move (Eq. 9) on the two problems where aMC beats gradient descent in
the paper. Moves (every one through the same ``amc_jax.fit`` loop, the same
aMC step and the same hyperparameters; only ``proposal=`` differs):

* ``gaussian``: ``proposals.gaussian(epsilon)``, today's move (the default).
* ``orthogonal``: ``proposals.partition`` with ``proposals.orthogonal()`` (a
  Cayley rotation W -> W R of size sigma, which keeps the singular values) for
  the square matrices (the RNN's recurrent matrix; the deep net's 4x4 hidden
  kernels) and ``proposals.gaussian(epsilon)`` for every other leaf; one
  accept/reject for the whole move.
* ``sparse``: ``proposals.sparse(--sparse-fraction)`` (0.1: each parameter
  moves with probability 0.1, at least one per step; base move Gaussian).
* ``layerwise``: ``proposals.layerwise()``: one leaf of the params pytree,
  chosen uniformly, moves per step (base move Gaussian).

A rotation cannot grow a matrix from ~0, so the orthogonal move is useless
from the paper's tiny init by construction. Every move therefore runs from two
inits, chains k of every move starting from the same draw:

* ``paper``: the paper's init (RNN: every parameter ~ N(0, 1e-6); deep net:
  every kernel and bias ~ N(0, 1e-4), as in Fig. 6, ``benchmarks/paper/fig6_deep.py``);
* ``orthogonal``: the same draw, but the square matrices replaced by random
  orthogonal matrices times ``--orthogonal-gain`` (1.0;
  ``jax.nn.initializers.orthogonal``).

Tasks:

``rnn`` (Fig. 5, from ``benchmarks/paper/fig5_rnn.py``: its data, model and
  loss are imported): scikit-learn digits 0/1 as binary sequences of 272
  pixels, a 1x32 tanh RNN, cross-entropy; aMC in minibatch mode (minibatches
  of 64), sigma0 = 1e-2, epsilon = 0, n_reset = 100; ``--seeds`` chains per
  (init, move) vmapped in one ``fit``. Every ``--rnn-eval-every`` steps: the
  full-training-set loss and the test accuracy. Reported: steps to the first
  evaluation with test accuracy >= 0.9 and the wall time to it, the
  best-checkpoint (lowest full training loss, no test data in the choice) and
  final test accuracy.

``deep`` (Fig. 6, the model of ``benchmarks/paper/fig6_deep.py``, ``_problems.DeepNarrow``): a depth-32 deep
  narrow tanh net (1 -> 30 x [Dense(4), tanh] -> Dense(10), tanh -> Dense(1))
  on the step function of 1000 points, MSE; aMC in batch mode with signal norm
  (sigma0 = 1e-2, epsilon = 1e-2, n_reset = 100: the configuration of
  ``benchmarks/paper/fig6_deep.py``, epsilon going to every Gaussian
  part). Reported: the final MSE after ``--deep-steps`` loss evaluations and
  the steps (and wall time) to reach a threshold taken from the Gaussian move
  on the paper init: 2 x its median final MSE (at most half the best-constant
  MSE 0.04675, so that a threshold is never "learned nothing").

Wall times are of the vmapped ensemble of ``--seeds`` chains (one program;
all chains advance together), from the ``fit`` call, so they include its
compilation; ``ms/step`` is the steady cost of one ensemble step. Wall times
come from a shared 2-core machine: the load average is recorded.

Each finished (task, init, move) group is checkpointed to
``bench_proposals.partial.json`` in ``--out-dir``; a rerun with the same
configuration skips the groups found there (``--fresh`` ignores them). The
partial file is removed once the final JSON is written.

  python -m benchmarks.studies.proposals [--quick] [--out-dir DIR] [--fresh]

Writes ``bench_proposals.json`` and ``bench_proposals.png`` into ``--out-dir``
(default ``benchmarks/results``). ``--quick`` (the smoke test): 8x8 digits
(sequences of 72), depth 4, a few dozen steps, one chain, XLA optimisation
level 0, and only the Gaussian move on the paper init beside every move on
the orthogonal init (it is mostly compilation). ``--plot-from FILE.json`` only redraws
the plot of a JSON.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
import types

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

from benchmarks import _common
from benchmarks.paper import _paper

NAME = "bench_proposals"
MOVES = ("gaussian", "orthogonal", "sparse", "layerwise")
INITS = ("paper", "orthogonal")
TASKS = ("rnn", "deep")
SIGMA0, N_RESET = 1e-2, 100
RNN_EPSILON, DEEP_EPSILON = 0.0, 1e-2
TARGET_ACC = 0.9  # _rnn.TRAINED
THRESHOLD_FACTOR = 2.0  # deep net: threshold = 2 x the Gaussian's median final MSE
MOVE_COLORS = {"gaussian": "k", "orthogonal": "tab:red", "sparse": "tab:blue",
               "layerwise": "tab:green"}

QUICK_HELP = "smoke test: tiny configuration, one chain, XLA optimisation level 0"


def parse_args(argv=None):
  p = _common.parser(__doc__, quick=QUICK_HELP, resumable=True)
  p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
  p.add_argument("--moves", nargs="+", choices=MOVES, default=list(MOVES))
  p.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS))
  p.add_argument("--seeds", type=int, default=None, help="chains per group (full 4, quick 1)")
  p.add_argument("--seed", type=int, default=0, help="base seed (inits, minibatches, aMC keys)")
  p.add_argument("--sparse-fraction", type=float, default=0.1)
  p.add_argument("--orthogonal-gain", type=float, default=1.0)
  p.add_argument("--rnn-steps", type=int, default=None, help="(full 6000, quick 40)")
  p.add_argument("--rnn-eval-every", type=int, default=None, help="(full 100, quick 20)")
  p.add_argument("--deep-steps", type=int, default=None, help="(full 10000, quick 40)")
  p.add_argument("--depth", type=int, default=None, help="deep net depth (full 32, quick 4)")
  p.add_argument("--deep-log-every", type=int, default=None, help="(full 100, quick 20)")
  args = p.parse_args(argv)
  full = dict(seeds=4, rnn_steps=6000, rnn_eval_every=100, deep_steps=10000, depth=32,
              deep_log_every=100)
  quick = dict(seeds=1, rnn_steps=40, rnn_eval_every=20, deep_steps=40, depth=4,
               deep_log_every=20)
  for k, v in (quick if args.quick else full).items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.rnn_steps % args.rnn_eval_every:
    p.error("--rnn-steps must be a multiple of --rnn-eval-every")
  if args.deep_steps % args.deep_log_every:
    p.error("--deep-steps must be a multiple of --deep-log-every")
  if not 0 < args.sparse_fraction <= 1:
    p.error("--sparse-fraction must be in (0, 1]")
  return args


def config_of(args) -> dict:
  """What a checkpointed group must share with this run to be reused."""
  return {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
          if k not in ("out_dir", "fresh", "tasks", "moves", "inits", "no_plot", "plot_from")}


# ---------------------------------------------------------------------------
# Moves and inits
# ---------------------------------------------------------------------------


def is_square(leaf) -> bool:
  return np.ndim(leaf) == 2 and np.shape(leaf)[0] == np.shape(leaf)[1]


def make_move(name: str, epsilon: float, fraction: float):
  """``(proposal, description)`` of one move; Gaussian parts use ``epsilon``."""
  import jax

  from amc_jax import proposals

  if name == "gaussian":
    return proposals.gaussian(epsilon), f"proposals.gaussian({epsilon})"
  if name == "sparse":
    return (proposals.sparse(fraction, proposals.gaussian(epsilon)),
            f"proposals.sparse({fraction}, proposals.gaussian({epsilon}))")
  if name == "layerwise":
    return (proposals.layerwise(proposals.gaussian(epsilon)),
            f"proposals.layerwise(proposals.gaussian({epsilon}))")
  if name == "orthogonal":
    labels = lambda params: jax.tree.map(
        lambda x: "orthogonal" if is_square(x) else "gaussian", params)
    move = proposals.partition(
        {"orthogonal": proposals.orthogonal(), "gaussian": proposals.gaussian(epsilon)}, labels)
    return move, (f"proposals.partition({{'orthogonal': proposals.orthogonal(), 'gaussian': "
                  f"proposals.gaussian({epsilon})}}, labels='orthogonal' for square 2-D leaves)")
  raise ValueError(name)


def orthogonalize(params, key, gain: float):
  """``params`` (with a leading chain axis) with every square matrix replaced by
  a random orthogonal one times ``gain``; the other leaves untouched."""
  import jax

  ortho = jax.nn.initializers.orthogonal(scale=gain)
  leaves, treedef = jax.tree.flatten(params)
  out = []
  for i, leaf in enumerate(leaves):
    if leaf.ndim == 3 and leaf.shape[1] == leaf.shape[2]:
      keys = jax.random.split(jax.random.fold_in(key, i), leaf.shape[0])
      leaf = jax.vmap(lambda k, s=leaf.shape[1:], d=leaf.dtype: ortho(k, s, d))(keys)
    out.append(leaf)
  return jax.tree.unflatten(treedef, out)


def both_inits(init, keys, args) -> dict:
  """``{"paper": init of each chain key, "orthogonal": the same with the square
  matrices orthogonal}``, in one compiled call (op by op, a flax init of 32
  layers costs seconds)."""
  import jax

  def make(keys):
    paper = jax.vmap(init)(keys)
    ortho = orthogonalize(paper, jax.random.key(args.seed + 1), args.orthogonal_gain)
    return {"paper": paper, "orthogonal": ortho}

  return jax.jit(make)(keys)


class Clock:
  """Wall time, since construction, at which each compiled chunk of ``fit`` ended.

  ``wrap(fn)`` is ``fit``'s ``eval_fn``: ``fit`` calls it after every
  ``every`` steps; it waits for the params of that step, records the time and
  evaluates. (Waiting serialises evaluation and the next chunk, which on a
  2-core CPU run one after the other anyway.)
  """

  def __init__(self, every: int):
    self.every, self.calls = every, 0
    self.start = time.perf_counter()
    self.times = {0: 0.0}

  def wrap(self, fn):
    import jax

    def timed(params):
      jax.block_until_ready(params)
      self.calls += 1
      self.times[self.calls * self.every] = time.perf_counter() - self.start
      return fn(params)

    return timed

  def at(self, steps) -> np.ndarray:
    known = np.asarray(sorted(self.times))
    t = np.asarray([self.times[s] for s in known])
    return np.interp(np.asarray(steps, np.float64), known, t)

  def ms_per_step(self) -> float:
    """Steady cost of one ensemble step: from the end of the first chunk on."""
    known = sorted(self.times)
    if len(known) < 3:
      return float("nan")
    a, b = known[1], known[-1]
    return 1e3 * (self.times[b] - self.times[a]) / (b - a)


def first_reach(curve: np.ndarray, steps: np.ndarray, reached) -> "int | None":
  hit = np.flatnonzero(reached(np.asarray(curve, np.float64)))
  return int(steps[hit[0]]) if hit.size else None


# ---------------------------------------------------------------------------
# The RNN task (Fig. 5)
# ---------------------------------------------------------------------------


def rnn_task(args):
  """``run(init, move) -> record`` for the RNN, and the data description."""
  import jax
  import jax.numpy as jnp

  import amc_jax
  from benchmarks import _rnn

  data = _rnn.load_data(types.SimpleNamespace(data="digits", quick=args.quick,
                                                  seed=args.seed))
  train = (jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"]))
  test = (jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"]))
  hidden, batch_size = 32, 64
  init, logits, loss_fn = _rnn.make_model(1, hidden)
  # fig5_rnn's chain k: init key fold_in(key(seed), 1000 + k), the paper init.
  keys = jnp.stack([jax.random.fold_in(jax.random.key(args.seed), 1000 + i)
                    for i in range(args.seeds)])
  params0 = both_inits(lambda k: init(k, "paper"), keys, args)

  @jax.jit
  def evaluate(chain_params):
    def one(p):
      acc = jnp.mean(jnp.argmax(logits(p, test[0]), -1) == test[1])
      return {"train_loss": loss_fn(p, train), "test_acc": acc,
              "wh0_norm": jnp.linalg.norm(p["wh0"], 2)}  # the recurrent spectral norm
    return jax.vmap(one)(chain_params)

  def run(init_name, move_name):
    move, desc = make_move(move_name, RNN_EPSILON, args.sparse_fraction)
    tx = amc_jax.amc(SIGMA0, n_reset=N_RESET, proposal=move, minibatch=True, seed=args.seed)
    params = params0[init_name]
    first = jax.device_get(evaluate(params))
    clock = Clock(args.rnn_eval_every)
    result = amc_jax.fit(tx, params, loss_fn, train, steps=args.rnn_steps,
                         batch_size=batch_size, sequential=False, key=args.seed,
                         n_chains=args.seeds,
                         chunk=args.rnn_eval_every, log_every=args.rnn_eval_every,
                         eval_fn=clock.wrap(evaluate), eval_every=args.rnn_eval_every,
                         progress=False)
    wall = time.perf_counter() - clock.start
    h = result.history
    ev = {k: np.concatenate([np.asarray(first[k])[None], np.asarray(v)])
          for k, v in h["eval"].items()}  # [evals, chains]
    eval_steps = np.concatenate([[0], h["eval_step"]])
    best = _rnn.summarize(ev, eval_steps)
    to_target = [first_reach(ev["test_acc"][:, c], eval_steps, lambda a: a >= TARGET_ACC)
                 for c in range(args.seeds)]
    return {
        "task": "rnn", "init": init_name, "move": move_name, "proposal": desc,
        "call": f"amc_jax.amc({SIGMA0}, n_reset={N_RESET}, proposal={desc}, minibatch=True, "
                f"seed={args.seed})",
        "steps": args.rnn_steps, "seeds": args.seeds, "wall_s": wall,
        "ms_per_ensemble_step": clock.ms_per_step(),
        "load_average_after": list(os.getloadavg()),
        "eval_step": eval_steps,
        "test_acc": ev["test_acc"].T, "train_loss": ev["train_loss"].T,
        "wh0_spectral_norm": ev["wh0_norm"].T,
        "eval_wall_s": clock.at(eval_steps),
        "acceptance": np.asarray(h["acceptance"]).T, "sigma": np.asarray(h["sigma"]).T,
        "history_step": h["step"],
        "mean_acceptance": np.nanmean(np.asarray(h["acceptance"]), axis=0),
        "steps_to_target": to_target,
        "wall_s_to_target": [None if s is None else float(clock.at([s])[0]) for s in to_target],
        "best_checkpoint_test_acc": best["best_test_acc"],
        "final_test_acc": best["final_test_acc"],
        "max_test_acc_seen": best["max_test_acc_seen"],
        "final_train_loss": best["final_train_loss"],
    }

  info = {"data": data["description"], "sequence_length": int(train[0].shape[1]),
          "n_train": int(train[0].shape[0]), "n_test": int(test[0].shape[0]),
          "model": f"1-layer tanh RNN, hidden {hidden}, final state -> linear -> 2 logits, "
                   "softmax cross-entropy (benchmarks/_rnn.make_model, as in Fig. 5)",
          "batch_size": batch_size, "mode": "aMC minibatch mode (fit evaluates U(x) and U(x') "
                                            "on each step's minibatch)",
          "sigma0": SIGMA0, "epsilon": RNN_EPSILON, "n_reset": N_RESET,
          "inits": {"paper": "every parameter ~ N(0, 1e-6) (std 1e-3), fig5_rnn's paper init",
                    "orthogonal": f"the paper draw with the recurrent matrix wh0 replaced by a "
                                  f"random orthogonal matrix x {args.orthogonal_gain}"},
          "target": f"first evaluation (every {args.rnn_eval_every} steps) with test accuracy "
                    f">= {TARGET_ACC}",
          "best_checkpoint": "evaluated point with the lowest full-training-set loss"}
  return run, info


# ---------------------------------------------------------------------------
# The deep narrow net (Fig. 6)
# ---------------------------------------------------------------------------


def deep_task(args):
  import jax
  import jax.numpy as jnp

  import amc_jax
  from benchmarks import _problems

  model = _problems.DeepNarrow(args.depth)
  theta, target = _problems.deep_problem()
  data = (theta, target)
  sn = amc_jax.signal_norm_value_fn(model, _problems.mse)
  loss_fn = lambda p, b: sn(p, *b)
  plain = jax.jit(jax.vmap(lambda p: _problems.mse(model.apply({"params": p}, theta), target)))
  # fit's convention for params functions: chain keys split(fold_in(key, 1), M),
  # so the paper-init chains are those of Fig. 6 (benchmarks/paper/fig6_deep.py).
  keys = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), 1), args.seeds)
  params0 = both_inits(lambda k: model.init(k, theta[:1])["params"], keys, args)
  chunk = math.gcd(args.deep_steps, 500 if not args.quick else args.deep_log_every)
  log_every = math.gcd(args.deep_log_every, chunk)

  def run(init_name, move_name):
    move, desc = make_move(move_name, DEEP_EPSILON, args.sparse_fraction)
    tx = amc_jax.amc(SIGMA0, n_reset=N_RESET, proposal=move, signal_norm=True, seed=args.seed)
    params = params0[init_name]
    start = np.asarray(plain(params), np.float64)
    clock = Clock(chunk)
    result = amc_jax.fit(tx, params, loss_fn, data, steps=args.deep_steps, n_chains=args.seeds,
                         chunk=chunk, log_every=log_every, key=args.seed, progress=False,
                         eval_fn=clock.wrap(plain))
    wall = time.perf_counter() - clock.start
    h = result.history
    steps = np.concatenate([[0], h["step"]])
    loss = np.concatenate([start[None], np.asarray(h["loss"], np.float64)])  # [rows, chains]
    return {
        "task": "deep", "init": init_name, "move": move_name, "proposal": desc,
        "call": f"amc_jax.amc({SIGMA0}, n_reset={N_RESET}, proposal={desc}, signal_norm=True, "
                f"seed={args.seed})",
        "steps": args.deep_steps, "seeds": args.seeds, "wall_s": wall,
        "ms_per_ensemble_step": clock.ms_per_step(),
        "load_average_after": list(os.getloadavg()),
        "history_step": steps, "loss": loss.T, "history_wall_s": clock.at(steps),
        "acceptance": np.asarray(h["acceptance"]).T, "sigma": np.asarray(h["sigma"]).T,
        "mean_acceptance": np.nanmean(np.asarray(h["acceptance"]), axis=0),
        "final_loss": np.asarray(plain(result.params), np.float64),
    }

  baseline = float(jnp.var(target))
  info = {"model": f"deep narrow tanh net, depth {args.depth}: 1 -> {args.depth - 2} x "
                   "[Dense(4), tanh] -> Dense(10), tanh -> Dense(1) "
                   "(_problems.DeepNarrow)",
          "data": "1000 points theta = i/1000, f0 = 0.5 on (0.5, 0.75), else 0; MSE",
          "baseline_mse_best_constant": baseline,
          "mode": "aMC batch mode (one loss evaluation per step), signal norm on",
          "sigma0": SIGMA0, "epsilon": DEEP_EPSILON, "n_reset": N_RESET,
          "chunk": chunk, "log_every": log_every,
          "inits": {"paper": "every kernel and bias ~ N(0, 1e-4) (std 1e-2), "
                             "Fig. 6's init",
                    "orthogonal": f"the paper draw with every square (4x4) hidden kernel "
                                  f"replaced by a random orthogonal matrix x "
                                  f"{args.orthogonal_gain}"},
          "loss_curve": "fit's history['loss']: each chain's current (last accepted) full-batch "
                        "MSE every log_every steps, step 0 the init",
          "final_loss": "plain MSE of each chain's final params, evaluated after fit"}
  return run, info


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def deep_threshold(groups: dict, baseline: float) -> "float | None":
  g = groups.get("deep/paper/gaussian")
  if g is None:
    return None
  return float(min(THRESHOLD_FACTOR * np.median(g["final_loss"]), 0.5 * baseline))


def _median(values) -> "float | None":
  vals = [v for v in values if v is not None]
  return float(np.median(vals)) if vals else None


def summarize(groups: dict, info: dict) -> list[dict]:
  """One row per (task, init, move)."""
  rows = []
  threshold = None
  if "deep" in info:
    threshold = deep_threshold(groups, info["deep"]["baseline_mse_best_constant"])
  for key, g in groups.items():
    row = {"task": g["task"], "init": g["init"], "move": g["move"], "seeds": g["seeds"],
           "wall_s": g["wall_s"], "ms_per_ensemble_step": g["ms_per_ensemble_step"],
           "mean_acceptance": float(np.mean(g["mean_acceptance"]))}
    if g["task"] == "rnn":
      steps, walls = g["steps_to_target"], g["wall_s_to_target"]
      row.update(target=f"test acc >= {TARGET_ACC}",
                 best_checkpoint_test_acc=_median(g["best_checkpoint_test_acc"]),
                 final_test_acc=_median(g["final_test_acc"]),
                 max_test_acc_seen=_median(g["max_test_acc_seen"]))
    else:
      loss = np.asarray(g["loss"], np.float64)
      hs = np.asarray(g["history_step"])
      steps = ([first_reach(c, hs, lambda u: u <= threshold) for c in loss]
               if threshold is not None else [None] * len(loss))
      wall_at = lambda s: float(np.interp(s, hs, np.asarray(g["history_wall_s"], np.float64)))
      walls = [None if s is None else wall_at(s) for s in steps]
      row.update(target=None if threshold is None else f"MSE <= {threshold:.3e}",
                 threshold=threshold, final_loss_median=_median(g["final_loss"]),
                 final_loss_best=float(np.min(g["final_loss"])), steps_to_target_all=steps,
                 wall_s_to_target_all=walls)
    row.update(reached=sum(s is not None for s in steps),
               steps_to_target_median=_median(steps), wall_s_to_target_median=_median(walls))
    rows.append(row)
  return rows


def format_table(rows: list[dict]) -> str:
  fmt = lambda v, spec: ("never" if v is None else format(v, spec)
                         if isinstance(v, (int, float)) else str(v))
  lines = []
  for task in TASKS:
    sub = [r for r in rows if r["task"] == task]
    if not sub:
      continue
    if task == "rnn":
      lines.append(f"RNN (Fig. 5): steps / wall to test acc >= {TARGET_ACC}: median over the "
                   "seeds that reached it (reached/seeds); medians over seeds of test acc")
      lines.append(f"{'init':10s} {'move':10s} {'reached':>7s} {'steps':>7s} {'wall s':>7s} "
                   f"{'best-ckpt acc':>13s} {'final acc':>9s} {'accept':>6s} {'ms/step':>7s}")
      for r in sub:
        lines.append(
            f"{r['init']:10s} {r['move']:10s} {r['reached']:3d}/{r['seeds']:<3d} "
            f"{fmt(r['steps_to_target_median'], '7.0f'):>7s} "
            f"{fmt(r['wall_s_to_target_median'], '7.1f'):>7s} "
            f"{r['best_checkpoint_test_acc']:13.3f} {r['final_test_acc']:9.3f} "
            f"{r['mean_acceptance']:6.3f} {fmt(r['ms_per_ensemble_step'], '7.2f'):>7s}")
    else:
      target = next((r["target"] for r in sub if r["target"]), "no threshold")
      lines.append(f"deep narrow net (Fig. 6, signal norm): steps / wall to {target}: median over "
                   "the seeds that reached it (reached/seeds); final MSE median (best)")
      lines.append(f"{'init':10s} {'move':10s} {'reached':>7s} {'steps':>7s} {'wall s':>7s} "
                   f"{'final MSE':>10s} {'(best)':>10s} {'accept':>6s} {'ms/step':>7s}")
      for r in sub:
        lines.append(
            f"{r['init']:10s} {r['move']:10s} {r['reached']:3d}/{r['seeds']:<3d} "
            f"{fmt(r['steps_to_target_median'], '7.0f'):>7s} "
            f"{fmt(r['wall_s_to_target_median'], '7.1f'):>7s} "
            f"{r['final_loss_median']:10.3e} {r['final_loss_best']:10.3e} "
            f"{r['mean_acceptance']:6.3f} {fmt(r['ms_per_ensemble_step'], '7.2f'):>7s}")
    lines.append("")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


def plot(record: dict, path: pathlib.Path) -> None:
  plt = _paper.pyplot()
  groups = record["groups"]
  tasks = [t for t in TASKS if any(g["task"] == t for g in groups.values())]
  inits = [i for i in INITS if any(g["init"] == i for g in groups.values())]
  fig, axes = plt.subplots(len(tasks), len(inits), figsize=(6.2 * len(inits), 4.3 * len(tasks)),
                           squeeze=False)
  threshold = None
  if "deep" in record["info"]:
    threshold = deep_threshold(groups, record["info"]["deep"]["baseline_mse_best_constant"])
  for i, task in enumerate(tasks):
    for j, init in enumerate(inits):
      ax = axes[i][j]
      for move in MOVES:
        g = groups.get(f"{task}/{init}/{move}")
        if g is None:
          continue
        c = MOVE_COLORS[move]
        if task == "rnn":
          x, ys = np.asarray(g["eval_step"]), np.asarray(g["test_acc"], np.float64)
        else:
          x, ys = np.asarray(g["history_step"]), np.asarray(g["loss"], np.float64)
        for y in ys:
          ax.plot(x, y, color=c, lw=0.7, alpha=0.3)
        ax.plot(x, np.median(ys, axis=0), color=c, lw=1.8,
                label=f"{move} (median of {len(ys)})")
      if task == "rnn":
        ax.axhline(TARGET_ACC, color="0.4", ls=":", lw=0.8)
        ax.set(ylabel="test accuracy", ylim=(0.3, 1.02),
               title=f"RNN, seq. length {record['info']['rnn']['sequence_length']}, "
                     f"{init} init")
      else:
        base = record["info"]["deep"]["baseline_mse_best_constant"]
        ax.axhline(base, color="0.4", ls="--", lw=0.8, label=f"best constant {base:.4f}")
        if threshold is not None:
          ax.axhline(threshold, color="0.4", ls=":", lw=0.8, label=f"threshold {threshold:.2e}")
        ax.set(ylabel="MSE (full batch)", yscale="log",
               title=f"deep net depth {record['config']['depth']}, signal norm, {init} init")
      ax.set_xlabel("step")
      ax.legend(fontsize=7)
  fig.suptitle("aMC trial moves (proposal=): bold = median over seeds, faint = each seed")
  _common.save_figure(fig, path)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(argv=None):
  args = parse_args(argv)
  if _common.replot(args.plot_from, plot):
    return None
  run = _common.start(args)  # load average, --quick compile, the XLA:CPU workaround
  t_start, load_start = run.start, run.load_start
  import jax

  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  partial_path = out_dir / f"{NAME}.partial.json"
  config = config_of(args)
  groups = {}
  if partial_path.exists() and not args.fresh:
    saved = json.loads(partial_path.read_text())
    if saved.get("config") == config:
      groups = saved["groups"]
      print(f"resuming: {len(groups)} group(s) from {partial_path}: {', '.join(groups)}")
    else:
      print(f"{partial_path} was written with another configuration: starting afresh")

  info = {}
  tasks = {"rnn": rnn_task, "deep": deep_task}
  for task in [t for t in TASKS if t in args.tasks]:
    run, info[task] = tasks[task](args)
    if task == "rnn":
      print(f"RNN: {info[task]['data']}; sequence length {info[task]['sequence_length']}",
            flush=True)
    for init, move in planned_groups(args):
      key = f"{task}/{init}/{move}"
      if key in groups:
        continue
      rec = _common.jsonable(run(init, move))
      groups[key] = rec
      _common.write_json(partial_path, {"config": config, "groups": groups})
      if task == "rnn":
        detail = (f"steps to {TARGET_ACC}: {rec['steps_to_target']}, best-ckpt acc "
                  f"{np.round(rec['best_checkpoint_test_acc'], 3).tolist()}")
      else:
        detail = f"final MSE {np.round(rec['final_loss'], 5).tolist()}"
      print(f"{key:25s} {rec['wall_s']:7.1f}s  {detail}", flush=True)

  groups = {k: groups[k] for k in sorted(groups, key=_order) if _selected(k, args)}
  summary = summarize(groups, info)
  table = format_table(summary)
  print(table)
  wall = time.perf_counter() - t_start
  record = {
      "command": _paper.command(),
      "quick": bool(args.quick),
      "config": config,
      "moves": {task: {m: make_move(m, eps, args.sparse_fraction)[1] for m in MOVES}
                for task, eps in (("rnn", RNN_EPSILON), ("deep", DEEP_EPSILON))},
      "info": info,
      "wall_s_this_invocation": wall,
      "wall_s_groups_total": float(sum(g["wall_s"] for g in groups.values())),
      "load_average_start": load_start,
      "load_average_end": list(os.getloadavg()),
      "jax_version": jax.__version__,
      "summary": summary,
      "table": table,
      "groups": groups,
  }
  _common.write_and_plot(out_dir, NAME, record, plot, args.no_plot)
  partial_path.unlink(missing_ok=True)
  print(f"total {wall:.0f}s this invocation, {record['wall_s_groups_total']:.0f}s in the groups")
  return record


def _order(key: str):
  task, init, move = key.split("/")
  return TASKS.index(task), INITS.index(init), MOVES.index(move)


def planned_groups(args) -> list[tuple[str, str]]:
  """(init, move) pairs of a task: all of them, or for --quick the Gaussian on
  the paper init (the deep net's threshold comes from it) and every move on the
  orthogonal init (fewer compilations: a quick run is mostly compiling)."""
  pairs = [(i, m) for i in INITS for m in MOVES if i in args.inits and m in args.moves]
  if args.quick:
    pairs = [(i, m) for i, m in pairs if i == "orthogonal" or m == "gaussian"]
  return pairs


def _selected(key: str, args) -> bool:
  task, init, move = key.split("/")
  return task in args.tasks and (init, move) in planned_groups(args)


if __name__ == "__main__":
  main()
