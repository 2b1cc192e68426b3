"""What every paper-reproduction script shares: CLI, data, JSON and plots.

Each script in ``benchmarks/paper/`` reproduces one result of Whitelam et al.
(2022), "Training neural networks using Metropolis Monte Carlo and an adaptive
variant", through the public API of amc_jax (``amc``, ``metropolis``, ``fit``)
with gradient baselines through optax in the same ``fit`` loop. Each has a
``--quick`` mode (a smoke test, under two minutes on 2 CPU cores; run by
``tests/test_benchmarks_paper.py``) and a full mode, and writes
``benchmarks/results/paper_<name>.json`` and ``.png`` (or under ``--out-dir``).

Data for the MNIST-format results: a directory of the standard IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; uncompressed
files without ``.gz`` work too), given by ``--data-dir`` or the environment
variable ``AMC_JAX_DATA_DIR``; default ``/usr/share/datasets/fashion-mnist``,
where Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import math
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = HERE.parent

from benchmarks import _common
from benchmarks._mnist import DATA_DIR_ENV, DEFAULT_DATA_DIR  # noqa: F401
from benchmarks._mnist import data_dir, load_mnist, read_idx, write_idx  # noqa: F401

RESULTS = _common.RESULTS
OUT = _common.OUT  # git-ignored; --out-dir benchmarks/results replaces a committed result


def parser(description: str) -> argparse.ArgumentParser:
  """An argument parser with the options every paper script has (``_common.parser``)."""
  return _common.parser(description)


def add_data_dir(p: argparse.ArgumentParser) -> None:
  p.add_argument("--data-dir", type=pathlib.Path, default=None,
                 help=f"directory of MNIST-format IDX files (default ${DATA_DIR_ENV} "
                      f"or {DEFAULT_DATA_DIR})")


# The harness, shared with every benchmark folder (benchmarks/_common.py).
QUICK_XLA_FLAG = _common.QUICK_XLA_FLAG
quick_compile = _common.quick_compile
Timer = _common.Timer
command = _common.command
write = _common.record
finish = _common.finish
start = _common.start


def paths(out_dir: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
  """``(json, png)`` paths of result ``paper_<name>`` under ``out_dir``."""
  return _common.paths(out_dir, name, prefix="paper_")


def pyplot():
  """matplotlib.pyplot with a non-interactive backend (pip install amc_jax[bench])."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


# ---------------------------------------------------------------------------
# Long runs: amc_jax.fit in segments, checkpointed after each, resumable.
# ---------------------------------------------------------------------------


def initial_state(tx, params, n_chains=None):
  """The state ``amc_jax.fit`` would start from (so a checkpoint has a target).

  One chain: ``tx.init(params)``. An ensemble of Monte Carlo chains:
  ``init_ensemble`` seeded from the key ``tx.init`` gives one chain (as
  ``fit`` does); an ensemble of gradient optimizers: ``jax.vmap(tx.init)``.
  """
  import jax
  import amc_jax

  if n_chains is None:
    return tx.init(params)
  one = tx.init(amc_jax.select_chain(params, 0))
  try:
    key = amc_jax.monte_carlo_state(one).key
  except ValueError:
    return jax.vmap(tx.init)(params)
  return amc_jax.init_ensemble(tx, params, key)


def _merge_history(total: dict | None, h: dict, done: int) -> dict:
  """Appends one fit call's history (steps counted from 0) at global step ``done``."""
  import numpy as np

  part = {k: np.asarray(v) for k, v in h.items() if k not in ("eval", "step", "eval_step")}
  part["step"] = np.asarray(h["step"], np.int64) + done
  if "eval" in h:
    part["eval_step"] = np.asarray(h["eval_step"], np.int64) + done
    part["eval"] = {k: np.asarray(v) for k, v in h["eval"].items()}
  if total is None:
    return part
  out = {k: np.concatenate([total[k], part[k]]) for k in part if k != "eval"}
  if "eval" in part:
    out["eval"] = {k: np.concatenate([total["eval"][k], part["eval"][k]]) for k in part["eval"]}
  return out


def _history_to_json(h: dict) -> dict:
  return _common.jsonable(h)


def _history_from_json(h: dict) -> dict:
  import numpy as np

  out = {k: np.asarray(v, np.float64 if k not in ("step", "eval_step") else np.int64)
         for k, v in h.items() if k != "eval"}
  if "eval" in h:
    out["eval"] = {k: np.asarray(v, np.float64) for k, v in h["eval"].items()}
  return out


def resumable_fit(tx, params, loss_fn, data=None, *, segments, checkpoint=None, opt_state=None,
                  n_chains=None, key=0, log_every=None, eval_fn=None, max_wall=None,
                  clock=None, label="", resume_from=None, **fit_kwargs):
  """``amc_jax.fit`` in segments, with a checkpoint after each; resumes from it.

  ``segments`` is a list of ``(length, chunk)``: fit runs ``length`` steps in
  compiled chunks of ``chunk`` and evaluates ``eval_fn`` after every chunk.
  After each segment the params, the optimizer state and the steps done go to
  ``<checkpoint>.ckpt`` (``amc_jax.save_checkpoint``, an Orbax directory) and the history so far
  to ``<checkpoint>.json``; a later call with the same arguments continues
  from there, bit for bit for full-batch runs. Segment ``i`` draws its
  minibatches (if any) from the data key ``fold_in(key, i)``, so minibatch
  runs depend on the segment plan (and are reproducible from it).
  ``max_wall`` (seconds on ``clock``, a :class:`Timer`) stops before a new
  segment once exceeded. ``resume_from``, the tuple an earlier call returned,
  continues from it in memory instead of reading the checkpoint.

  Returns ``(params, opt_state, history, steps_done, compute_wall_s)``; the
  history has global steps and the evaluation at step 0 is not included.
  """
  import json
  import jax
  import amc_jax

  if opt_state is None:
    opt_state = initial_state(tx, params, n_chains)
  history, done, wall = None, 0, 0.0
  if checkpoint is not None:
    checkpoint = pathlib.Path(checkpoint)
    ck, side = checkpoint.with_suffix(".ckpt"), checkpoint.with_suffix(".json")
    read = ck
    if not ck.exists() and checkpoint.with_suffix(".msgpack").is_file():
      read = checkpoint.with_suffix(".msgpack")  # an earlier amc_jax's file
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
  if resume_from is not None:
    params, opt_state, history, done, wall = resume_from
  elif checkpoint is not None:
    if read.exists() and side.exists():
      import jax.numpy as jnp
      target = {"params": params, "opt_state": opt_state, "done": jnp.zeros((), jnp.int32)}
      saved = amc_jax.restore_checkpoint(read, target)
      params, opt_state, done = saved["params"], saved["opt_state"], int(saved["done"])
      meta = json.loads(side.read_text())
      history = _history_from_json(meta["history"]) if meta["history"] else None
      wall = float(meta["wall_s"])
      if history is not None:  # rows a crash left beyond the checkpoint
        keep = history["step"] <= done
        ekeep = history["eval_step"] <= done if "eval_step" in history else None
        history = {k: (v[keep] if k not in ("eval", "eval_step") else v)
                   for k, v in history.items()}
        if ekeep is not None:
          history["eval_step"] = history["eval_step"][ekeep]
          history["eval"] = {k: v[ekeep] for k, v in history["eval"].items()}
      print(f"{label}: resumed at step {done} from {ck}", flush=True)
  start = 0
  for i, (length, chunk) in enumerate(segments):
    end = start + length
    if end <= done:
      start = end
      continue
    if start != done:
      raise ValueError(f"checkpoint at step {done} is not a segment boundary of the plan")
    if max_wall is not None and clock is not None and clock() > max_wall:
      print(f"{label}: stopping at step {done} (wall budget {max_wall:.0f} s)", flush=True)
      break
    t = Timer()
    le = chunk if log_every is None else math.gcd(log_every, chunk)
    kw = dict(eval_fn=eval_fn, eval_every=chunk) if eval_fn is not None else {}
    r = amc_jax.fit(tx, params, loss_fn, data, steps=length, chunk=chunk, log_every=le,
                    opt_state=opt_state, n_chains=n_chains, key=jax.random.fold_in(
                        jax.random.key(key) if isinstance(key, int) else key, i),
                    progress=False, **kw, **fit_kwargs)
    jax.block_until_ready(r.params)
    params, opt_state = r.params, r.opt_state
    history = _merge_history(history, r.history, done)
    done = end
    wall += t()
    start = end
    if checkpoint is not None:
      import jax.numpy as jnp
      side.write_text(json.dumps({"done": done, "wall_s": wall,
                                  "history": _history_to_json(history)}))
      amc_jax.save_checkpoint(ck, {"params": params, "opt_state": opt_state,
                                   "done": jnp.asarray(done, jnp.int32)})
    print(f"{label}: step {done} ({wall:.0f} s)", flush=True)
  return params, opt_state, history, done, wall
