"""A fitting loop: jitted ``lax.scan`` chunks, minibatches, ensembles, progress.

:func:`fit` trains any optax transformation on a loss. Monte Carlo
transformations (those whose state holds an :class:`~amc_jax.AMCState`) are
stepped with ``value_fn=``; every other transformation is treated as a gradient
optimizer and stepped with ``jax.value_and_grad``, so aMC and Adam run through
the same loop. Steps run on device in compiled chunks; the host only logs,
evaluates and draws the progress bar between chunks.

The compiled programs are in :mod:`amc_jax._src.chunks`, keyed by the
transformation and the loss (held by identity), so a second :func:`fit` with
the same ``tx`` and ``loss_fn`` (resuming, or a benchmark repeat) compiles
nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amc_jax._src import base
from amc_jax._src import chunks
from amc_jax._src import replicas as replicas_lib
from amc_jax._src import sequential as sequential_lib
from amc_jax._src import state as state_lib
from amc_jax._src import trees

PyTree = Any

# Steps per compiled chunk when neither `chunk` nor `eval_every` says: long
# enough that the host's work between chunks (a few hundred microseconds) is
# ~1% of a chunk of the paper's sine net (~20 us/step on 2 CPU cores), short
# enough for a lively progress bar.
_DEFAULT_CHUNK = 1000


class ProgressiveBatching(NamedTuple):
  r"""Progressive batching, Section II F and Fig. 7b of Whitelam et al. (2022).

  Training starts on a fixed minibatch of ``start`` examples; whenever the
  classification error on that minibatch falls below ``threshold`` the
  minibatch grows by ``factor`` (up to the whole data set) and, with
  ``reset=True``, the aMC algorithm is reset: :math:`\sigma \to \sigma_0`,
  :math:`\mu_i \to 0` (and the count of consecutive rejections to 0). Moves
  are still accepted on the minibatch *loss*; the error only triggers growth.

  The minibatch is fixed between growths ("the batch identity is kept fixed",
  Section II F): the rows ``order[:size]`` of the data for one random
  permutation ``order = jax.random.permutation(jax.random.fold_in(key, 2), N)``
  drawn from the ``key`` of :func:`fit`, so a grown minibatch contains the
  previous one. Steps are therefore in batch mode (one loss
  evaluation per aMC step), and :func:`fit` re-bases the cached loss on the
  new minibatch when it grows.

  Growth changes array shapes, so :func:`fit` checks the error between
  compiled chunks: every ``chunk`` steps (set ``chunk=`` of :func:`fit` to
  check more or less often). Each minibatch size compiles one program. Every
  call of :func:`fit` starts at ``start``: to resume a progressive run, pass
  ``start=result.history["batch_size"][-1]``.

  Attributes:
    error_fn: ``error_fn(params, batch) -> scalar`` error rate in [0, 1] of one
      chain on a minibatch (a pytree like the data with ``size`` rows). Must
      be a JAX function: it is jitted (and vmapped over chains).
    start: initial minibatch size (500 in the paper).
    factor: integer growth factor >= 2 (2 in the paper).
    threshold: the minibatch grows when the error falls below this (0.1).
    reset: reset sigma, mu and the rejection count on growth (the paper does).

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> def error(params, batch):
    ...   x, labels = batch
    ...   return jnp.mean(((x @ params) > 0) != labels)
    >>> amc_jax.ProgressiveBatching(error, start=500, factor=2, threshold=0.1)
    ProgressiveBatching(error_fn=<function error ...>, start=500, factor=2, threshold=0.1, reset=True)
  """

  error_fn: Callable[[PyTree, PyTree], Any]
  start: int = 500
  factor: int = 2
  threshold: float = 0.1
  reset: bool = True


class FitResult(NamedTuple):
  """What :func:`fit` returns.

  Attributes:
    params: the final params (with the leading chain axis for an ensemble).
    opt_state: the final state of ``tx`` (ditto); pass it back to :func:`fit`
      as ``opt_state=`` to continue.
    history: a dict of NumPy arrays with one row per ``log_every`` steps:

      - ``"step"`` ``[rows]``: steps taken by this call at the end of the row.
      - ``"loss"`` ``[rows]`` (``[rows, M]`` for M chains): for Monte Carlo,
        the current loss U(x) after the row's last step (on that step's
        minibatch); for gradient optimizers, the loss of the params that the
        row's last step started from (what ``value_and_grad`` computed:
        another forward pass would cost a step's worth of time).
      - ``"acceptance"`` (same shape): fraction of the row's steps that were
        accepted; NaN for gradient optimizers.
      - ``"sigma"`` (same shape): sigma after the row; NaN for gradient
        optimizers.
      - ``"batch_size"`` ``[rows]``: examples per loss evaluation (N for
        full-batch steps, the chunk size for the sequential test, 0 without
        data).
      - ``"data_passes"`` (same shape as ``"loss"``): data passes used by
        this call up to the end of the row, one pass being N per-example loss
        evaluations: 1 per full-batch step, 2B/N per Monte Carlo step on a
        minibatch of B (U(x) and U(x')), what the sequential test read, and
        B/N per gradient step (the backward pass not counted). Without data:
        evaluations of ``loss_fn``. The evaluation that re-bases the cached
        loss before the first full-batch step is not counted.
      - ``"eval_step"`` ``[evals]`` and ``"eval"``: the steps at which
        ``eval_fn`` ran and its results, a pytree like ``eval_fn``'s output
        with a leading ``[evals]`` axis (only when ``eval_fn`` is given).
    best_chain: for an ensemble, the index of the chain with the lowest final
      logged loss (all chains see the same minibatches, so the comparison is
      fair); ``None`` for a single chain. See :func:`select_chain`.
    steps_taken: the steps this call took: ``steps``, or fewer when
      ``max_seconds`` stopped it (at a chunk boundary).

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> result = amc_jax.fit(amc_jax.amc(0.1, seed=0), jnp.zeros(2),
    ...                      lambda x: jnp.sum((x - 1.0) ** 2), steps=100, log_every=25,
    ...                      progress=False)
    >>> sorted(result.history), result.history["loss"].shape, result.best_chain
    (['acceptance', 'batch_size', 'data_passes', 'loss', 'sigma', 'step'], (4,), None)
  """

  params: PyTree
  opt_state: PyTree
  history: dict[str, Any]
  best_chain: Optional[int]
  steps_taken: Optional[int] = None


def select_chain(tree: PyTree, index: int) -> PyTree:
  """Chain ``index`` of an ensemble pytree (params or state): ``x[index]`` per leaf.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> amc_jax.select_chain({"w": jnp.arange(6.0).reshape(3, 2)}, 1)
    {'w': Array([2., 3.], dtype=float32)}
  """
  return trees.take(tree, index)


def _own(tree: PyTree) -> PyTree:
  """A copy of the caller's arrays, which fit may then donate."""
  return jax.tree_util.tree_map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)


# ----------------------------------------------------------------------------
# Validation.


def _check_data(data: PyTree) -> tuple[PyTree, int]:
  n = trees.leading_size(data, "data", "(of examples)")
  if n < 1:
    raise ValueError("data has no examples (leading axis of size 0).")
  return jax.device_put(data), n


def _check_signature(loss_fn: Callable, second: Optional[str]) -> None:
  """Raises unless ``loss_fn(params)`` or ``loss_fn(params, second)`` binds."""
  try:
    sig = inspect.signature(loss_fn)
  except (TypeError, ValueError):  # builtins, some C extensions: trust the caller
    return
  args = ("params",) if second is None else ("params", second)
  try:
    sig.bind(*args)
  except TypeError:
    form = f"loss_fn({', '.join(args)})"
    why = {"batch": "data is given", "key": "random_loss=True",
           None: "there is no data"}[second]
    raise TypeError(
        f"loss_fn must be callable as {form} since {why}; its signature is {sig}."
    ) from None


def _check_progressive(p: Any, n: int) -> ProgressiveBatching:
  if not isinstance(p, ProgressiveBatching):
    raise TypeError(f"progressive must be an amc_jax.ProgressiveBatching, got {p!r}.")
  if not callable(p.error_fn):
    raise TypeError(f"ProgressiveBatching.error_fn must be callable, got {p.error_fn!r}.")
  trees.check_int("ProgressiveBatching.start", p.start, 1)
  trees.check_int("ProgressiveBatching.factor", p.factor, 2)
  if p.start > n:
    raise ValueError(
        f"ProgressiveBatching.start={p.start} exceeds the {n} examples in data."
    )
  threshold = float(p.threshold)
  if not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
    raise ValueError(f"ProgressiveBatching.threshold must lie in (0, 1], got {p.threshold!r}.")
  return p


def _check_chain_axis(params: PyTree, n_chains: int) -> None:
  """Every params leaf has a leading chain axis of size ``n_chains`` (named
  per leaf: unbatched params usually differ in their first sizes)."""
  if not jax.tree_util.tree_leaves(params):
    raise ValueError("params must contain at least one array; got an empty pytree.")
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    shape = jnp.shape(leaf)
    if not shape or shape[0] != n_chains:
      raise ValueError(
          f"with n_chains={n_chains} every params leaf needs a leading chain axis of"
          f" that size; {jax.tree_util.keystr(path) or 'params'} has shape {shape}."
      )


def _largest_divisor_at_most(n: int, cap: int) -> int:
  return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


# ----------------------------------------------------------------------------
# The sequential test in fit.


def _per_example(loss_fn: Callable, params: PyTree, data: PyTree, rows: int, one_chain: bool) -> bool:
  """Whether ``loss_fn(params, batch)`` returns per-example losses (shape ``[rows]``)."""
  p = select_chain(params, 0) if one_chain else params
  batch = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct((rows,) + tuple(np.shape(x)[1:]), jnp.result_type(x)), data
  )
  out = jax.eval_shape(loss_fn, p, batch)
  return hasattr(out, "shape") and tuple(out.shape) == (rows,)


def _resolve_sequential(
    sequential: Any, opt_state: PyTree, *, batch_size: Optional[int], n_examples: int,
    per_example: bool, monte_carlo: bool, replicas: bool, has_data: bool,
) -> tuple[Optional[sequential_lib.SequentialTest], int]:
  """The sequential test fit runs, if any, and the group size of a mean-form loss.

  A transformation built with a test keeps it; ``sequential=SequentialTest``
  asks for one; by default Monte Carlo minibatches (``batch_size``) use one
  with chunks of ``batch_size`` examples; ``sequential=False`` keeps plain
  minibatches.
  """
  if not (sequential is None or sequential is False
          or isinstance(sequential, sequential_lib.SequentialTest)):
    raise TypeError(
        f"sequential must be None, False or an amc_jax.SequentialTest, got {sequential!r}."
    )
  built = [s.sequential for s in state_lib.monte_carlo_states(opt_state) if s.sequential is not None]
  if built and sequential is None and batch_size is None:
    return _test_of_state(built[0], per_example, n_examples), 0
  if isinstance(sequential, sequential_lib.SequentialTest):
    if not (monte_carlo and has_data) or replicas or batch_size is not None:
      raise ValueError(
          "sequential=SequentialTest(...) decides Monte Carlo steps of amc or"
          " metropolis (or an ensemble of them) on data; it sets the chunk size"
          " itself, so drop batch_size."
      )
    if sequential.num_examples not in (None, n_examples):
      raise ValueError(
          f"sequential.num_examples={sequential.num_examples}, but data has"
          f" {n_examples} examples; leave it None for fit to fill in."
      )
    test = sequential._replace(num_examples=n_examples)
  elif sequential is None and batch_size is not None and monte_carlo and not replicas:
    test = _default_test(opt_state, batch_size, n_examples)
    if test is None:
      return None, 0
  else:
    return None, 0
  sequential_lib.check_test(test, need_examples=True)
  if per_example:
    return test, 0
  # A mean-form loss: the test's units are the mean losses of groups of rows,
  # ten groups a chunk.
  group = max(1, test.chunk_size // sequential_lib.MIN_EXAMPLES)
  units = test.chunk_size // group
  if n_examples // group < units:
    raise ValueError(f"data has too few examples ({n_examples}) for chunks of {test.chunk_size}.")
  return test._replace(num_examples=n_examples // group, chunk_size=units), group


def _test_of_state(cache, per_example: bool, n_examples: int) -> sequential_lib.SequentialTest:
  """The test of a state that runs one (a transformation built with a test,
  or a state from a sequential fit): it keeps its test."""
  if not per_example:
    raise ValueError(
        "this state runs a sequential test: fit needs a loss_fn(params, batch)"
        " that returns per-example losses (shape [batch rows])."
    )
  test = sequential_lib.SequentialTest(
      num_examples=int(np.ravel(cache.num_examples)[0]),
      chunk_size=int(cache.losses.shape[-1]),
      confidence=float(np.ravel(cache.confidence)[0]),
      growth=round(float(np.ravel(cache.growth)[0]), 6),
  )
  if test.num_examples != n_examples:
    raise ValueError(
        f"the state's SequentialTest has num_examples={test.num_examples}, but"
        f" data has {n_examples} examples; pass sequential=SequentialTest(...)"
        " to start a new test."
    )
  return test


def _default_test(opt_state, batch_size: int, n_examples: int):
  """fit's default for Monte Carlo on minibatches of B: the test with chunks
  of B, or None (plain minibatches, with a warning saying why)."""
  if any(s.scales is not None for s in state_lib.monte_carlo_states(opt_state)):
    warnings.warn(
        "the sequential acceptance test does not support signal norm: fit draws"
        " plain minibatches, on which Monte Carlo stalls at the minibatch noise"
        " floor (and with epsilon > 0 can drift upward). Train on full batches"
        " or progressive batching, or pass sequential=False to silence this.",
        UserWarning, stacklevel=5,
    )
    return None
  if batch_size < sequential_lib.MIN_EXAMPLES:
    warnings.warn(
        f"batch_size={batch_size} is too small for the sequential acceptance test"
        f" (chunks of >= {sequential_lib.MIN_EXAMPLES} examples): fit draws plain"
        " minibatches, on which Monte Carlo stalls at the minibatch noise floor."
        " Use batch_size >= 10, or pass sequential=False to silence this.",
        UserWarning, stacklevel=5,
    )
    return None
  return sequential_lib.SequentialTest(num_examples=n_examples, chunk_size=batch_size)


def _sequential_data(data: PyTree, key: jax.Array, test: sequential_lib.SequentialTest,
                     group: int, n_examples: int) -> PyTree:
  """The data in the test's layout: one random permutation (``fold_in(key, 3)``)
  cut into ``num_chunks`` chunks; the last chunk padded with repeated rows
  (ignored by the test), or, for a mean-form loss, rows in groups."""
  order = jax.random.permutation(jax.random.fold_in(key, 3), n_examples)
  if group:
    idx = order[: test.num_examples * group]
    return jax.tree_util.tree_map(
        lambda x: jnp.take(x, idx, axis=0).reshape((test.num_examples, group) + x.shape[1:]), data
    )
  pad = test.num_chunks * test.chunk_size - n_examples
  idx = jnp.concatenate([order, order[:pad]])
  return jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data)


def _steps_taken(opt_state: PyTree) -> int:
  """The steps a state has taken: the largest integer ``count`` field in it
  (``AMCState.count``, optax's ``ScaleByAdamState.count``, ...), 0 if none."""
  counts = [
      int(np.max(np.asarray(jax.device_get(v)), initial=0))
      for _, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count")
      if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.integer)
  ]
  return max(counts, default=0)


def _attach_sequential(
    opt_state: PyTree, test: Optional[sequential_lib.SequentialTest], ensemble: bool
) -> PyTree:
  """Every AMCState with a fresh :class:`SequentialState` (an empty cache), or
  with none for ``test=None``."""
  fresh = None if test is None else sequential_lib.init(test)

  def attach(state):
    return state_lib.replace_monte_carlo_states(lambda s: s._replace(sequential=fresh), state)

  return jax.vmap(attach)(opt_state) if ensemble else attach(opt_state)



# ----------------------------------------------------------------------------
# Progress.


class _Progress:
  """tqdm when importable, else plain lines; a callable gets the lines."""

  def __init__(self, progress: Union[bool, Callable[[str], None]], total: int):
    self.bar, self.write, self.total = None, None, total
    if progress is False:
      return
    if callable(progress):
      self.write = progress
      return
    try:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:
      self.write = lambda line: print(line, file=sys.stdout, flush=True)
      return
    self.bar = tqdm(total=total, unit="step", dynamic_ncols=True)

  def update(self, done: int, n: int, stats: dict[str, str]) -> None:
    if self.bar is not None:
      self.bar.set_postfix(stats, refresh=False)
      self.bar.update(n)
    elif self.write is not None:
      fields = "  ".join(f"{k} {v}" for k, v in stats.items())
      self.write(f"step {done}/{self.total}  {fields}")

  def note(self, line: str) -> None:
    if self.bar is not None:
      self.bar.write(line)
    elif self.write is not None:
      self.write(line)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _summary(rows: dict[str, np.ndarray], monte_carlo: bool, size: int) -> dict[str, str]:
  loss = rows["loss"][-1]
  stats = {"loss": f"{np.nanmin(loss):.4e}" if np.any(np.isfinite(loss)) else f"{np.min(loss)}"}
  if monte_carlo:
    stats["acceptance"] = f"{np.mean(rows['acceptance'][-1]):.3f}"
    stats["sigma"] = f"{np.mean(rows['sigma'][-1]):.3e}"
  if size:
    stats["batch"] = str(size)
  return stats


# ----------------------------------------------------------------------------
# The loop.


def fit(
    tx: optax.GradientTransformation,
    params: Union[PyTree, Callable[[jax.Array], PyTree]],
    loss_fn: Callable[..., Any],
    data: Optional[PyTree] = None,
    *,
    steps: int,
    batch_size: Optional[int] = None,
    key: base.PRNGKeyLike = 0,
    opt_state: Optional[PyTree] = None,
    n_chains: Optional[int] = None,
    progressive: Optional[ProgressiveBatching] = None,
    sequential: Union[None, bool, sequential_lib.SequentialTest] = None,
    chunk: Optional[int] = None,
    log_every: Optional[int] = None,
    eval_fn: Optional[Callable[[PyTree], Any]] = None,
    eval_every: Optional[int] = None,
    progress: Union[bool, Callable[[str], None]] = True,
    max_seconds: Optional[float] = None,
    donate: bool = False,
    random_loss: bool = False,
) -> FitResult:
  r"""Trains ``params`` with ``tx`` for ``steps`` steps in compiled chunks.

  Each step is, for a Monte Carlo transformation (one whose state contains an
  :class:`~amc_jax.AMCState`: :func:`~amc_jax.amc`, :func:`~amc_jax.metropolis`,
  chains of them),

  .. code-block:: python

    value_fn = lambda p: loss_fn(p, batch)
    updates, state = tx.update(None, state, params, value_fn=value_fn, value=current_loss)

  and for any other transformation (a gradient optimizer such as
  ``optax.adam``)

  .. code-block:: python

    loss, grads = jax.value_and_grad(lambda p: loss_fn(p, batch))(params)
    updates, state = tx.update(grads, state, params)  # + value=, grad=, value_fn=

  (the extra arguments go only to ``GradientTransformationExtraArgs``, so
  ``optax.lbfgs`` works), then ``params = optax.apply_updates(params,
  updates)``. ``chunk`` steps run as one jitted ``lax.scan``; the host logs,
  evaluates and updates the progress bar between chunks while the next chunk
  runs.

  **Data.** Without ``data`` the loss is ``loss_fn(params)``. With ``data`` (a
  pytree of arrays sharing a leading axis of N examples, moved to the device
  once) it is ``loss_fn(params, batch)``, where ``batch`` is the whole of
  ``data`` (full batch) or, with ``batch_size=B``, a minibatch of B rows drawn
  on device each step, uniformly with replacement, from a data key
  ``jax.random.fold_in(key, 0)``: step ``t`` uses
  ``jax.random.fold_in(data_key, t)``, counted from the steps ``opt_state``
  has taken (its largest ``count``; 0 for a fresh state), so a run continued
  with ``opt_state=`` and the same ``key`` continues the data stream:
  ``fit(steps=a)`` then ``fit(steps=b, opt_state=...)`` draws the minibatches
  of ``fit(steps=a + b)``. The optimizer's own key stream (the seed of
  ``tx``) is untouched, so a fit is reproducible from ``key`` and the seed of
  ``tx``, and independent of ``chunk`` and ``log_every``.

  **Minibatches and Monte Carlo: the sequential test.** A Monte Carlo step
  on a fixed-size minibatch accepts every move that improves *that*
  minibatch; near the minibatch's noise floor that says nothing about the
  full loss, sigma never shrinks, and with ``epsilon > 0`` mu (Eq. 10)
  follows moves accepted on noise and the full-data loss drifts upward. So
  with ``batch_size=B`` a Monte Carlo transformation (``amc``, ``metropolis``,
  an ensemble of them) is decided by the sequential acceptance test
  (:class:`~amc_jax.SequentialTest`, chunks of B examples, confidence 0.8):
  each move reads chunks of the data, in a random order of one random
  partition (``jax.random.fold_in(key, 3)``), until it is confident of the
  sign of the full-data loss change, up to the whole data set. Early in
  training that is one chunk; near a minimum, more. ``loss_fn`` should return
  per-example losses (shape ``[batch rows]``); a loss that returns the mean
  is tested on the means of groups of ``B // 10`` rows instead (the last
  ``N mod (B // 10)`` rows of the shuffled data are then left out). Pass
  ``sequential=SequentialTest(chunk_size=..., confidence=...)`` to choose the
  test, or ``sequential=False`` for plain minibatches (``batch_size`` rows
  drawn uniformly with replacement every step, U(x) and U(x') both evaluated
  on them: two evaluations per step). The test does not support signal norm
  or ``num_proposals > 1``: there ``batch_size`` draws plain minibatches
  (with a warning for signal norm). Gradient optimizers and replica methods
  always draw plain minibatches; a per-example loss is averaged for them.

  **Random objectives: common random numbers.** With ``random_loss=True``
  the loss is ``loss_fn(params, key)`` (no ``data``): an objective that
  depends on random numbers, such as the mean return of a policy over a
  batch of episodes whose initial states and noise come from ``key``. Step
  ``t`` draws a fresh key, ``jax.random.fold_in(jax.random.fold_in(key, 0),
  t)``, and a Monte Carlo step evaluates U(x) and U(x') with that same key,
  so that the comparison of the two is not drowned in the noise of the
  episodes (common random numbers); like a minibatch step, that is two
  evaluations per step (``data_passes`` counts evaluations). The keys are
  ``fit``'s ``key``, separate from the optimizer's own key stream (the seed
  of ``tx``), so a run is reproducible from both. All chains of an ensemble
  see the same keys; a gradient optimizer gets the gradient at that key.
  Writing your own loop: ``amc(..., minibatch=True)`` evaluates U(x) on
  every step, so ``value_fn=lambda p: loss_fn(p, key_t)`` with a fresh
  ``key_t`` per step does the same.

  Full-batch steps pass the loss cached in the state: one evaluation per
  step. That cache is re-based on the data before the first step (one more
  evaluation), since a resumed ``opt_state`` may hold a loss on other data
  (minibatches, another data set), and on every growth of a progressive
  minibatch. :func:`fit` always tells the step U(x) through ``value=``, so
  the ``minibatch`` flag of ``tx`` does not matter.

  **Signal norm.** With ``amc(..., signal_norm=True)``, ``loss_fn`` returns
  ``(loss, lambdas)`` (e.g. ``lambda p, b: value_fn(p, *b)`` for ``value_fn``
  from :func:`~amc_jax.signal_norm_value_fn`), and the lambdas cached in the
  state travel with the cached loss: still one evaluation per full-batch step.

  **Ensembles.** With ``n_chains=M`` the leaves of ``params`` carry a leading
  chain axis of size M (or ``params`` is a function ``init(key) -> params``,
  called for ``jax.random.split(jax.random.fold_in(key, 1), M)``), the state is
  :func:`~amc_jax.init_ensemble` seeded from the key of ``tx.init`` (for
  gradient optimizers ``jax.vmap(tx.init)``), and every step is ``jax.vmap``
  of the single-chain step: M chains in one compiled program and one dispatch
  per chunk. All chains see the same minibatches, so chain k follows exactly
  the single-chain fit from chain k's params and state. History rows get a
  chain axis and :attr:`FitResult.best_chain` names the chain with the lowest
  final loss.

  Args:
    tx: an optax transformation: a Monte Carlo one from amc_jax, or a gradient
      optimizer.
    params: the initial params; with ``n_chains``, params with a leading chain
      axis. Either may be given as a function ``init(key) -> params``, called
      with ``jax.random.fold_in(key, 1)`` (split per chain).
    loss_fn: ``loss_fn(params, batch) -> scalar`` with data, ``loss_fn(params)``
      without; a JAX function (it is traced into the compiled chunk).
    data: optional pytree of arrays with a common leading axis of examples.
    steps: number of steps (>= 1).
    batch_size: minibatches of this many examples (needs ``data``): for a
      Monte Carlo transformation the chunk size of the sequential test (see
      above), else a minibatch drawn every step; ``None`` for full-batch
      steps.
    key: an int or ``jax.random.key`` for the data, not for the optimizer (its
      randomness comes from its own seed): minibatches use
      ``jax.random.fold_in(key, 0)``, ``params`` functions
      ``jax.random.fold_in(key, 1)``, progressive batching's permutation
      ``jax.random.fold_in(key, 2)``.
    opt_state: state to start from (e.g. ``FitResult.opt_state`` of an earlier
      call); default ``tx.init(params)`` (or the ensemble initialisation).
    n_chains: run an ensemble of this many independent chains. Not for a
      transformation that couples its chains (:func:`~amc_jax.population`,
      :func:`~amc_jax.replica_exchange`): give it params with the chain axis
      and no ``n_chains``.
    progressive: a :class:`ProgressiveBatching` (needs ``data``, excludes
      ``batch_size``): start on a fixed minibatch and grow it as the error on
      it falls. Checked every ``chunk`` steps. Gradient optimizers grow the
      minibatch too, without any reset.
    sequential: ``None`` (default: the sequential test for Monte Carlo
      minibatches, or the test ``tx`` was built with), an
      :class:`~amc_jax.SequentialTest` (its ``num_examples`` filled in from
      ``data``; no ``batch_size``), or ``False`` for plain minibatches. The
      test's cache starts empty in every call.
    chunk: steps per compiled call; default ``min(steps, 1000)`` (or a divisor
      of ``eval_every``). A last, shorter chunk takes the remainder of
      ``steps`` and compiles once more.
    log_every: steps per history row; must divide ``chunk`` and ``steps``.
      Default ``gcd(chunk, steps)``.
    eval_fn: called on the host as ``eval_fn(params)`` every ``eval_every``
      steps (those params are donated to the next chunk: return values
      computed from them, or a copy, ``jax.tree.map(jnp.copy, params)``), with the ensemble's params for an ensemble (``jax.vmap`` it for
      per-chain results). Returns a pytree of scalars or arrays; ``jax.jit``
      it if it is JAX code, since it then runs while the next chunk computes.
    eval_every: steps between evaluations, a multiple of ``chunk``; default
      ``chunk``.
    progress: ``True`` shows a tqdm bar (tqdm: the ``progress`` extra of a local install, ``pip install -e '.[progress]'``) or,
      without tqdm, prints a line per chunk; ``False`` is silent; a callable
      receives the lines instead.
    max_seconds: a wall-time budget in seconds, compilation included: no new
      chunk starts once it is spent, so the run stops at a chunk boundary
      (overshooting by up to about one chunk, which was already running) and
      ``FitResult.steps_taken`` says where; the history ends there. ``None``
      runs all ``steps``.
    donate: ``True`` hands the buffers of the ``params`` and ``opt_state`` you
      pass to fit, as ``jax.jit``'s ``donate_argnums`` does: the compiled
      chunks train in them, saving the copy of each that fit otherwise makes
      to keep the caller's arrays valid (one P of memory for the params). Your
      arrays are deleted; use ``FitResult.params``. No effect when ``params`` is an init function,
      whose params fit owns anyway.
    random_loss: ``True``: ``loss_fn(params, key)`` is a random objective,
      evaluated at x and x' with the same fresh key every step (see above);
      excludes ``data``.

  Returns:
    A :class:`FitResult` ``(params, opt_state, history, best_chain, steps_taken)``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> x = jnp.linspace(-1.0, 1.0, 200)
    >>> data = (x, 3.0 * x - 1.0)
    >>> def loss_fn(params, batch):
    ...   x, y = batch
    ...   return jnp.mean((params["a"] * x + params["b"] - y) ** 2)
    >>> params = {"a": jnp.zeros(()), "b": jnp.zeros(())}
    >>> tx = amc_jax.amc(sigma0=0.1, epsilon=0.1, n_reset=20, seed=0)
    >>> result = amc_jax.fit(tx, params, loss_fn, data, steps=2000, progress=False)
    >>> result.history["loss"].shape, bool(result.history["loss"][-1] < 1e-3)
    ((2,), True)
    >>> sgd = amc_jax.fit(optax.sgd(0.1), params, loss_fn, data, steps=1000,
    ...                   batch_size=32, progress=False)
    >>> bool(sgd.history["loss"][-1] < 1e-2), bool(jnp.isnan(sgd.history["sigma"]).all())
    (True, True)
  """
  started = time.perf_counter()
  steps, data, n_examples, batch_size, progressive, eval_every = _check_arguments(
      tx, loss_fn, steps, data, batch_size, progressive, eval_fn, eval_every, progress,
      max_seconds, donate, random_loss,
  )
  key = base.as_key(key, "key")
  schedule = _schedule(steps, chunk, log_every, eval_fn, eval_every)
  params, opt_state, ensemble = _prepare(tx, params, opt_state, n_chains,
                                         jax.random.fold_in(key, 1), donate)
  spec, opt_state, feed = _configure(
      tx, loss_fn, params, opt_state, data, n_examples, key, batch_size=batch_size,
      progressive=progressive, sequential=sequential, ensemble=ensemble,
      random_loss=random_loss,
  )
  run = _Run(params=params, opt_state=opt_state, feed=feed, data_key=jax.random.fold_in(key, 0),
             first=_steps_taken(opt_state))
  rows, evals = _loop(run, spec, schedule, data, n_examples, progressive, eval_fn, progress,
                      max_seconds, started)
  history = _history(rows, evals, schedule.log_every, eval_fn is not None)
  return FitResult(params=run.params, opt_state=run.opt_state, history=history,
                   best_chain=_best_chain(history, spec.ensemble or spec.replicas),
                   steps_taken=run.done)


# ----------------------------------------------------------------------------
# The parts of fit.


def _check_arguments(tx, loss_fn, steps, data, batch_size, progressive, eval_fn, eval_every,
                     progress, max_seconds, donate, random_loss):
  """Validates fit's arguments; returns the normalised ``(steps, data (on the
  device), n_examples, batch_size, progressive, eval_every)``."""
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(f"tx must be an optax GradientTransformation, got {tx!r}.")
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
  steps = trees.check_int("steps", steps, 1)
  if max_seconds is not None:
    base.check_positive("max_seconds", max_seconds)
  for name, flag in (("donate", donate), ("random_loss", random_loss)):
    if not isinstance(flag, bool):
      raise TypeError(f"{name} must be True or False, got {flag!r}.")
  if random_loss and data is not None:
    raise ValueError(
        "random_loss=True evaluates loss_fn(params, key) with a fresh key each step;"
        " it takes no data= (draw the data from the key inside loss_fn)."
    )
  if not isinstance(progress, bool) and not callable(progress):
    raise TypeError(f"progress must be a bool or a callable, got {progress!r}.")
  n_examples = 0
  if data is not None:
    data, n_examples = _check_data(data)
  if batch_size is not None:
    batch_size = trees.check_int("batch_size", batch_size, 1)
    if data is None:
      raise ValueError("batch_size draws minibatches from data; pass data= too.")
    if batch_size > n_examples:
      raise ValueError(
          f"batch_size={batch_size} exceeds the {n_examples} examples in data; use"
          " batch_size=None for full-batch steps."
      )
  if progressive is not None:
    if data is None:
      raise ValueError("progressive batching draws its minibatch from data; pass data=.")
    if batch_size is not None:
      raise ValueError(
          "progressive batching chooses the minibatch size itself; drop batch_size."
      )
    progressive = _check_progressive(progressive, n_examples)
  _check_signature(loss_fn, second="batch" if data is not None else (
      "key" if random_loss else None))
  if eval_every is not None:
    if eval_fn is None:
      raise ValueError("eval_every needs an eval_fn.")
    eval_every = trees.check_int("eval_every", eval_every, 1)
  if eval_fn is not None and not callable(eval_fn):
    raise TypeError(f"eval_fn must be callable, got {type(eval_fn).__name__}.")
  return steps, data, n_examples, batch_size, progressive, eval_every


class _Schedule(NamedTuple):
  """How fit cuts ``steps``: compiled chunks, log rows, evaluations."""

  chunk: int
  log_every: int
  eval_every: Optional[int]
  lengths: list[int]  # the steps of each chunk


def _schedule(steps, chunk, log_every, eval_fn, eval_every) -> _Schedule:
  if chunk is None:
    chunk = (
        _DEFAULT_CHUNK if eval_every is None
        else _largest_divisor_at_most(eval_every, _DEFAULT_CHUNK)
    )
  else:
    chunk = trees.check_int("chunk", chunk, 1)
  chunk = min(chunk, steps)
  if log_every is None:
    log_every = math.gcd(chunk, steps)
  log_every = trees.check_int("log_every", log_every, 1)
  if chunk % log_every or steps % log_every:
    raise ValueError(
        f"log_every={log_every} must divide chunk={chunk} and steps={steps}"
        f" (gcd(chunk, steps) = {math.gcd(chunk, steps)} always does)."
    )
  if eval_fn is not None:
    eval_every = chunk if eval_every is None else eval_every
    if eval_every % chunk:
      raise ValueError(
          f"eval_every={eval_every} must be a multiple of chunk={chunk}: evaluations"
          " run between compiled chunks. Set chunk to a divisor of eval_every."
      )
  lengths = [chunk] * (steps // chunk) + ([steps % chunk] if steps % chunk else [])
  return _Schedule(chunk, log_every, eval_every, lengths)


def _prepare(tx, params, opt_state, n_chains, init_key, donate):
  """The params (drawn by an init function, or the caller's: copies, unless
  ``donate``, since fit donates them to its chunks) and the optimizer state;
  ``(params, opt_state, ensemble)``."""
  own = (lambda tree: tree) if donate else _own
  ensemble = n_chains is not None
  if ensemble:
    n_chains = trees.check_int("n_chains", n_chains, 1)
    if callable(params):
      params = jax.vmap(params)(jax.random.split(init_key, n_chains))
    else:
      params = own(params)
    _check_chain_axis(params, n_chains)
    _check_not_coupled(tx, params, opt_state)
  elif callable(params):
    params = params(init_key)
  else:
    params = own(params)
  if opt_state is None:
    opt_state = chunks.init_state(params, tx=chunks.Ref(tx), ensemble=ensemble)
  else:
    opt_state = own(opt_state)
  return params, opt_state, ensemble


def _check_not_coupled(tx, params: PyTree, opt_state: PyTree) -> None:
  """``n_chains`` vmaps independent chains; a coupled transformation
  (:func:`~amc_jax.population`, :func:`~amc_jax.replica_exchange`) steps its
  own chain axis, so the two do not combine."""
  if opt_state is None:
    try:
      opt_state = jax.eval_shape(tx.init, params)
    except (ValueError, TypeError):  # a per-chain init that rejects the chain axis
      return
  if replicas_lib.is_coupled_state(opt_state):
    raise ValueError(
        "n_chains vmaps independent chains, but tx couples its chains itself"
        " (population, replica_exchange, population_annealing): pass params with"
        " the leading chain axis and no n_chains; fit steps the coupled chains as one."
    )


class _Feed(NamedTuple):
  """The data that full-batch and sequential chunks see (all of it, the
  progressive minibatch, or the sequential test's layout), its size, and
  progressive batching's row order."""

  batch: PyTree
  size: int
  order: Optional[jax.Array]


def _configure(tx, loss_fn, params, opt_state, data, n_examples, key, *, batch_size,
               progressive, sequential, ensemble, random_loss):
  """What the chunks run: the :class:`chunks.Spec` (Monte Carlo or gradients, the
  data mode, the sequential test), the state with its caches set for it,
  and the :class:`_Feed`."""
  monte_carlo = bool(state_lib.monte_carlo_states(opt_state))
  # replica_exchange, population, ...: the transformation vmaps its replicas
  # (their states carry the marker replicas_lib.is_coupled_state reads).
  replicas = monte_carlo and not ensemble and replicas_lib.is_coupled_state(opt_state)
  per_example = data is not None and _per_example(
      loss_fn, params, data, batch_size or n_examples, ensemble or replicas
  )
  test, group = _resolve_sequential(
      sequential, opt_state, batch_size=batch_size, n_examples=n_examples,
      per_example=per_example, monte_carlo=monte_carlo, replicas=replicas,
      has_data=data is not None,
  )
  if test is not None and progressive is not None:
    raise ValueError("progressive batching and the sequential test exclude each other.")
  mode = ("key" if random_loss else "none") if data is None else (
      "sequential" if test else ("minibatch" if batch_size else "full"))
  spec = chunks.Spec(
      tx=chunks.Ref(tx), loss_fn=chunks.Ref(loss_fn), mode=mode,
      batch_size=test.chunk_size if test else (batch_size or 0),
      monte_carlo=monte_carlo, extra_args=isinstance(tx, optax.GradientTransformationExtraArgs),
      ensemble=ensemble, replicas=replicas, per_example=per_example, group=group,
      pass_size=test.num_examples if test else max(n_examples, 1),
  )
  feed = _Feed(data, batch_size or n_examples, None)
  if progressive is not None:
    order = jax.random.permutation(jax.random.fold_in(key, 2), n_examples)
    feed = _Feed(chunks.first_rows(data, order, size=progressive.start), progressive.start,
                 order)
  if test is not None:
    feed = _Feed(_sequential_data(data, key, test, group, n_examples),
                 test.chunk_size * max(group, 1), None)
    opt_state = _attach_sequential(opt_state, test, ensemble)
  elif any(s.sequential is not None for s in state_lib.monte_carlo_states(opt_state)):
    opt_state = _attach_sequential(opt_state, None, ensemble)  # sequential=False
  if test is None and monte_carlo and mode not in ("minibatch", "key"):
    opt_state = chunks.rebase(params, opt_state, feed.batch, spec=spec, reset=False)
  return spec, opt_state, feed


@dataclasses.dataclass
class _Run:
  """What the loop carries from chunk to chunk."""

  params: PyTree
  opt_state: PyTree
  feed: _Feed
  data_key: jax.Array
  first: int  # the state's steps before this call: the data stream continues there
  done: int = 0


def _loop(run, spec, schedule, data, n_examples, progressive, eval_fn, progress, max_seconds,
          started):
  """Runs the chunks; returns the host rows of each and the evaluations.

  Pipelined: a chunk's rows are read (a device sync) after the next chunk
  is dispatched. With ``max_seconds`` no chunk starts once it is spent.
  """
  steps = sum(schedule.lengths)
  bar = _Progress(progress, steps)
  rows: list[dict[str, Any]] = []
  evals: list[tuple[int, Any]] = []
  pending = None  # the previous chunk's rows, read after the next is dispatched

  def finish(item):
    chunk_rows, done, n, chunk_size = item
    chunk_rows = jax.device_get(chunk_rows)
    chunk_rows["batch_size"] = np.full(chunk_rows["loss"].shape[:1], chunk_size, np.int64)
    rows.append(chunk_rows)
    bar.update(done, n, _summary(chunk_rows, spec.monte_carlo, chunk_size))

  try:
    for i, length in enumerate(schedule.lengths):
      if max_seconds is not None and i > 0 and time.perf_counter() - started >= max_seconds:
        bar.note(f"stopped after {run.done} of {steps} steps: max_seconds={max_seconds:g} spent")
        break
      start = run.first + run.done
      # A NumPy array travels with the call: no extra dispatch to build it.
      ts = np.arange(start, start + length, dtype=np.int32).reshape(-1, schedule.log_every)
      run.params, run.opt_state, chunk_rows = chunks.run_chunk(
          run.params, run.opt_state, data if spec.mode == "minibatch" else run.feed.batch,
          run.data_key, ts, spec=spec,
      )
      run.done += length
      if eval_fn is not None and run.done % schedule.eval_every == 0:
        evals.append((run.done, eval_fn(run.params)))
      item = (chunk_rows, run.done, length, run.feed.size if data is not None else 0)
      if progressive is not None and i + 1 < len(schedule.lengths):
        _grow(run, spec, data, n_examples, progressive)
      if pending is not None:
        finish(pending)
      pending = item
    finish(pending)
  finally:
    bar.close()
  return rows, evals


def _grow(run, spec, data, n_examples, progressive) -> None:
  """Progressive batching between chunks: the minibatch grows by ``factor``
  once its error (the best chain's, for an ensemble) is below ``threshold``."""
  if run.feed.size >= n_examples:
    return
  error = np.asarray(
      chunks.errors(run.params, run.feed.batch, error_fn=chunks.Ref(progressive.error_fn),
                    ensemble=spec.ensemble or spec.replicas)
  )
  if float(np.min(error)) < float(progressive.threshold):
    size = min(run.feed.size * progressive.factor, n_examples)
    run.feed = run.feed._replace(batch=chunks.first_rows(data, run.feed.order, size=size),
                                 size=size)
    if spec.monte_carlo:
      run.opt_state = chunks.rebase(
          run.params, run.opt_state, run.feed.batch, spec=spec, reset=bool(progressive.reset)
      )


def _history(rows, evals, log_every, with_eval) -> dict[str, Any]:
  history = {
      name: np.concatenate([r[name] for r in rows])
      for name in ("loss", "acceptance", "sigma", "batch_size")
  }
  history["step"] = np.arange(1, len(history["loss"]) + 1, dtype=np.int64) * log_every
  history["data_passes"] = np.cumsum(
      np.concatenate([r["passes"] for r in rows]).astype(np.float64), axis=0
  )
  if with_eval:
    history["eval_step"] = np.asarray([s for s, _ in evals], np.int64)
    results = jax.device_get([r for _, r in evals])
    history["eval"] = (
        jax.tree_util.tree_map(lambda *xs: np.stack(xs), *results) if results else None
    )
  return history


def _best_chain(history, many) -> Optional[int]:
  """The chain (or replica) of lowest final logged loss; None for one chain."""
  if not many:
    return None
  last = history["loss"][-1]
  return int(np.nanargmin(last)) if np.any(~np.isnan(last)) else 0
