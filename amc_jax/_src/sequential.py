r"""The sequential acceptance test: decide each move with just enough data.

On a data set of N examples the loss is a mean, :math:`U(x) = N^{-1}
\sum_i U_i(x)`, and the Metropolis test compares :math:`\Delta U = U(x') -
U(x)`, the mean of the per-example differences :math:`d_i = U_i(x') -
U_i(x)`, with a threshold :math:`\mu_0`: accept iff :math:`\Delta U \le 0` at
:math:`T = 0`, and iff :math:`\log u < -\Delta U/T + \log q_r`, i.e.
:math:`\Delta U < \mu_0 = T(\log q_r - \log u)`, at :math:`T > 0`.

Rather than compute :math:`\Delta U` on all N examples, or on a minibatch
whose noise decides for it, the test reads the data in chunks (a random order
of fixed chunks of one random partition), with the same examples for x and x',
and stops as soon as the mean of the differences seen is below or above
:math:`\mu_0` by more than ``t`` standard errors (with the finite-population
correction :math:`\sqrt{1 - (n-1)/(N-1)}`); otherwise it reads the next chunk,
up to the whole data set, where it decides exactly as a full-batch step does
(Korattikara, Chen and Welling 2014; Bardenet, Doucet and Holmes 2014).

The test looks at the differences after 1, 2, 4, 8, ... chunks (``growth``
2, the default; the sample doubles between looks, as in Bardenet, Doucet and
Holmes's geometric schedule) and after the last chunk; ``growth=1`` looks
after every chunk. The critical value is set so that the probability of a
wrong decision is at most ``1 - confidence`` per step, by a union bound over
the L looks that can stop before the whole data set (C chunks; L = C - 1 at
``growth=1``, about log2 C at 2): each look stops
wrongly with probability at most ``(1 - confidence) / L`` (one-sided,
from Student's t with n - 1 degrees of freedom, in the normal approximation
of the mean that chunks of tens of examples or more make good). The last
look is exact. A non-finite per-example loss of x' rejects the move at once.

The per-example losses of the current params are cached, in the state, so
that a look costs one evaluation of the chunk (at x') where the chunk's
cache is known, and two where it is not (after an accepted move, the chunks
that the decision did not read). A step that reads everything costs at most
two passes, and one pass once the cache is warm, like a full-batch step.

References:
  Korattikara, Chen, Welling, `Austerity in MCMC land: cutting the
  Metropolis-Hastings budget <https://arxiv.org/abs/1304.5299>`_, ICML 2014.
  Bardenet, Doucet, Holmes, `Towards scaling up Markov chain Monte Carlo: an
  adaptive subsampling approach <https://proceedings.mlr.press/v32/bardenet14.html>`_,
  ICML 2014.
  Seita, Pan, Chen, Canny, `An efficient minibatch acceptance test for
  Metropolis-Hastings <https://arxiv.org/abs/1610.06848>`_, UAI 2017.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from amc_jax._src import acceptance
from amc_jax._src import base

PyTree = Any

# Fewer per-example differences than this never stop the test: the variance
# estimate (and the normal approximation) is too rough below it.
MIN_EXAMPLES = 10


class SequentialTest(NamedTuple):
  r"""Configuration of the sequential acceptance test (module :mod:`amc_jax._src.sequential`).

  Each step decides its move with just enough data: the per-example loss
  differences :math:`U_i(x') - U_i(x)` are read chunk by chunk, in a random
  order of the chunks, until their mean is below (accept) or above (reject)
  the Metropolis threshold with the requested confidence, or until all N
  examples are read (then the decision is the full-batch one, exactly).
  Early in training a move is decided on one chunk, like a minibatch step;
  near a minimum, where minibatch noise would decide, the test reads more.

  With :func:`~amc_jax.fit`, pass ``batch_size=B`` and a ``loss_fn`` that
  returns per-example losses (shape ``[B]``): the test is then the default,
  with chunks of B examples (see :func:`~amc_jax.fit`). Writing your own step,
  build the transformation with it and pass ``chunk_fn=``:

  .. code-block:: python

    tx = amc_jax.amc(1e-2, sequential=amc_jax.SequentialTest(num_examples=N, chunk_size=250))
    updates, state = tx.update(None, state, params, chunk_fn=chunk_fn)

  where ``chunk_fn(params, c)`` returns the ``[chunk_size]`` per-example
  losses of chunk ``c`` (an int32 in ``[0, num_chunks)``) of a fixed,
  randomly shuffled data set; rows past ``num_examples`` in the last chunk
  are ignored.

  Attributes:
    num_examples: N, the number of examples (per-example losses) in the data
      set; ``None`` lets :func:`~amc_jax.fit` fill it in from its data.
    chunk_size: examples per chunk, B (>= 10; tens to hundreds make the normal
      approximation of the mean good). ``ceil(N / B)`` chunks.
    confidence: the probability, at least, that a step's decision agrees with
      the full-batch decision (in the normal approximation), in (0, 1]; 1
      reads every example: the full-batch step, decision for decision. The
      default 0.8 trained fastest (``benchmarks/studies/minibatch.py``: full
      batch's final accuracy in 0.29 of its data passes on both nets, against
      0.34-0.39 at 0.95, with no drift): at T = 0 the decisions it gets wrong
      are those of moves that barely change the loss. When sampling at T >
      0, prefer 0.95-0.99 (``benchmarks/studies/sequential_bias.py``).
    growth: the test looks after ``ceil(growth**k)`` chunks, k = 0, 1, 2, ...,
      and after the last; a number >= 1. 2 (the default) doubles the sample
      between looks, so that few looks share the error budget (and each
      stops sooner); 1 looks after every chunk.

  Examples:
    >>> import amc_jax
    >>> test = amc_jax.SequentialTest(num_examples=1000, chunk_size=100, confidence=0.95)
    >>> test.num_chunks
    10
    >>> test.look_after
    (1, 2, 4, 8, 10)

  References:
    Korattikara, Chen, Welling, Austerity in MCMC land: cutting the
    Metropolis-Hastings budget, ICML 2014. Bardenet, Doucet, Holmes, Towards
    scaling up Markov chain Monte Carlo: an adaptive subsampling approach,
    ICML 2014. Seita, Pan, Chen, Canny, An efficient minibatch acceptance
    test for Metropolis-Hastings, UAI 2017.
  """

  num_examples: Optional[int] = None
  chunk_size: int = 250
  confidence: float = 0.8
  growth: float = 2.0

  @property
  def num_chunks(self) -> int:
    """``ceil(num_examples / chunk_size)``."""
    if self.num_examples is None:
      raise ValueError("the SequentialTest has no num_examples yet.")
    return -(-int(self.num_examples) // int(self.chunk_size))

  @property
  def look_after(self) -> tuple[int, ...]:
    """The numbers of chunks read at which the test looks (the last is all of them)."""
    return look_after(self.num_chunks, self.growth)


def look_after(num_chunks: int, growth: float) -> tuple[int, ...]:
  """``ceil(growth**k)`` for k = 0, 1, ... below ``num_chunks``, then ``num_chunks``."""
  if growth <= 1:
    return tuple(range(1, num_chunks + 1))
  growth = float(growth)
  looks, k = [], 0
  while True:
    # Rounded before the ceiling, so that growth**k = 8.000000001 is 8.
    m = int(math.ceil(round(growth**k, 9)))
    if m >= num_chunks:
      break
    if not looks or m > looks[-1]:
      looks.append(m)
    # The next power that can pass m: k jumps there (one short of it, against
    # rounding in the logarithms), so a growth just above 1 takes a few
    # iterations per look, not (log m / log growth) of them.
    k = max(k + 1, int(math.floor(math.log(m) / math.log(growth))))
  return tuple(looks) + (num_chunks,)


class SequentialState(NamedTuple):
  """The sequential test's part of an :class:`~amc_jax.AMCState` (``state.sequential``).

  Attributes:
    losses: ``[num_chunks, chunk_size]`` per-example losses of the current
      params, chunk by chunk; meaningful where ``known``.
    known: ``[num_chunks]`` bool, whether a chunk's ``losses`` are those of the
      current params.
    num_examples: N (int32 scalar); rows past it in the last chunk are padding.
    confidence: the test's confidence (scalar).
    used: examples the last decision read (int32 scalar).
    evaluated: per-example loss evaluations of the last step, at x' and at x
      (int32 scalar): ``used`` plus the current params' examples that were not
      cached. ``evaluated / num_examples`` is the step's cost in data passes.
    growth: the test's ``growth`` (scalar).
    looks: ``[num_chunks]`` bool, whether the test looks after reading
      ``i + 1`` chunks (:attr:`SequentialTest.look_after`); the last is True.
  """

  losses: jax.Array
  known: jax.Array
  num_examples: jax.Array
  confidence: jax.Array
  used: jax.Array
  evaluated: jax.Array
  growth: jax.Array
  looks: jax.Array


def check_test(test: Any, *, need_examples: bool) -> SequentialTest:
  """Validates a :class:`SequentialTest` (eagerly, naming the bad field)."""
  if not isinstance(test, SequentialTest):
    raise TypeError(f"sequential must be an amc_jax.SequentialTest, got {test!r}.")
  for name in ("chunk_size",) + (("num_examples",) if need_examples else ()):
    value = getattr(test, name)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
      raise TypeError(f"SequentialTest.{name} must be an int, got {value!r}.")
  if test.chunk_size < MIN_EXAMPLES:
    raise ValueError(
        f"SequentialTest.chunk_size must be >= {MIN_EXAMPLES} (the test needs a"
        f" variance estimate from each look), got {test.chunk_size}."
    )
  if need_examples and test.num_examples < MIN_EXAMPLES:
    raise ValueError(
        f"SequentialTest.num_examples must be >= {MIN_EXAMPLES}, got {test.num_examples}."
    )
  c = test.confidence
  if isinstance(c, (bool, np.bool_)) or not isinstance(c, numbers.Real) or not 0 < c <= 1:
    raise ValueError(f"SequentialTest.confidence must be a number in (0, 1], got {c!r}.")
  g = test.growth
  if (isinstance(g, (bool, np.bool_)) or not isinstance(g, numbers.Real)
      or not math.isfinite(g) or g < 1):
    raise ValueError(f"SequentialTest.growth must be a number >= 1, got {g!r}.")
  return test


def init(test: SequentialTest) -> SequentialState:
  """A :class:`SequentialState` with an empty cache for ``test``."""
  test = check_test(test, need_examples=True)
  dtype = base.loss_dtype()
  chunks = test.num_chunks
  looks = np.zeros((chunks,), bool)
  looks[np.asarray(test.look_after) - 1] = True
  return SequentialState(
      losses=jnp.zeros((chunks, int(test.chunk_size)), dtype),
      known=jnp.zeros((chunks,), bool),
      num_examples=jnp.asarray(int(test.num_examples), jnp.int32),
      confidence=jnp.asarray(float(test.confidence), dtype),
      used=jnp.zeros([], jnp.int32),
      evaluated=jnp.zeros([], jnp.int32),
      growth=jnp.asarray(float(test.growth), dtype),
      looks=jnp.asarray(looks),
  )


def critical_value(confidence: jax.Array, looks: Any, n: jax.Array) -> jax.Array:
  """The t value at which one of ``looks`` looks stops, after n differences.

  One-sided level ``(1 - confidence) / looks`` (the union bound), Student's
  t with n - 1 degrees of freedom by the Cornish-Fisher expansion of its
  quantile around the normal one (exact to ~1% from 10 degrees of freedom).
  """
  alpha = (1.0 - confidence) / jnp.maximum(looks, 1).astype(jnp.asarray(confidence).dtype)
  z = jax.scipy.special.ndtri(1.0 - alpha)
  nu = jnp.maximum(n - 1, 1).astype(z.dtype)
  z2 = z * z
  g1 = (z2 + 1.0) * z / 4.0
  g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
  g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
  g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
  return z + g1 / nu + g2 / nu**2 + g3 / nu**3 + g4 / nu**4


class Outcome(NamedTuple):
  """What :func:`decide` found: the decision and the cache after the step."""

  decision: acceptance.Decision
  current_loss: jax.Array  # U(x) over the examples read (exact when all were)
  trial_loss: jax.Array  # U(x') over the examples read, NaN for a bad x'
  state: SequentialState  # the cache for the params after the step


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  count = jnp.sum(mask).astype(values.dtype)
  return jnp.sum(jnp.where(mask, values, jnp.zeros_like(values))) / count


def _rows(state: SequentialState) -> jax.Array:
  """``[chunks, B]`` bool: which cache entries are real examples (not padding)."""
  chunks, size = state.losses.shape
  index = jnp.arange(chunks * size, dtype=jnp.int32).reshape(chunks, size)
  return index < state.num_examples


def _evaluate_chunk(chunk_fn: Callable, params: PyTree, c: jax.Array, size: int, dtype) -> jax.Array:
  losses = jnp.asarray(chunk_fn(params, c))
  if losses.shape != (size,):
    raise ValueError(
        f"chunk_fn(params, c) must return the {size} per-example losses of a"
        f" chunk (shape ({size},)), got shape {losses.shape}."
    )
  if not (jnp.issubdtype(losses.dtype, jnp.floating) or jnp.issubdtype(losses.dtype, jnp.integer)):
    raise TypeError(f"chunk_fn must return real losses, got dtype {losses.dtype}.")
  return losses.astype(dtype)


def _threshold(key, temperature, log_ratio, dtype, cold):
  """The Metropolis threshold mu_0 of the mean difference: 0 at T = 0, else
  ``T (log q_r - log u)`` with ``u = jax.random.uniform(key, ())``."""
  if cold:
    return jnp.zeros([], dtype)
  u = jax.random.uniform(key, (), dtype)
  hot = temperature > 0
  log_q = jnp.asarray(log_ratio).astype(dtype)
  return jnp.where(hot, temperature.astype(dtype) * (log_q - jnp.log(u)), 0.0)


def _t_statistic(s1, s2, nf, n_float, threshold):
  """(mean - threshold) / its standard error, from the sums of the n = ``nf``
  differences read, with the finite-population correction for N = ``n_float``."""
  mean = s1 / nf
  var = jnp.maximum(s2 - s1 * mean, 0.0) / jnp.maximum(nf - 1.0, 1.0)
  fpc = jnp.maximum(1.0 - (nf - 1.0) / jnp.maximum(n_float - 1.0, 1.0), 0.0)
  return (mean - threshold) / jnp.sqrt(var / nf * fpc)


def _acceptance_probability(accepted, bad, mean, temperature, log_ratio, dtype, cold):
  """What :class:`~amc_jax.AMCInfo` reports: the decision at T = 0, else
  min(1, exp(-mean / T) q_r) from the differences read (0 for a bad move)."""
  if cold:
    return accepted.astype(dtype)
  hot = temperature > 0
  log_p = jnp.where(hot, -mean / jnp.where(hot, temperature.astype(dtype), 1.0), -jnp.inf)
  log_p = jnp.where(hot, log_p + jnp.asarray(log_ratio).astype(dtype), log_p)
  return jnp.where(bad, 0.0, jnp.where(hot, jnp.exp(jnp.minimum(log_p, 0.0)),
                                      accepted.astype(dtype)))


class _Carry(NamedTuple):
  """The sequential test's loop state: chunks read, sums of the differences,
  the caches, and whether (and how) it has decided."""

  i: jax.Array  # chunks read
  s1: jax.Array  # sum of U_k(x') - U_k(x) over the examples read
  s2: jax.Array  # sum of their squares
  n: jax.Array  # examples read
  cache: jax.Array  # per-example losses at x (state.losses, filled as read)
  known: jax.Array  # chunks whose losses at x are cached
  trial: jax.Array  # per-example losses at x' read
  seen: jax.Array  # chunks read in this test
  evaluated: jax.Array  # loss evaluations, in examples
  done: jax.Array
  accepted: jax.Array
  bad: jax.Array  # a non-finite trial loss was read


def _read_chunk(carry: _Carry, c, chunk_fn, params, trial_params, rows, size, dtype) -> _Carry:
  """Reads chunk ``c``: U at x' (and at x unless cached), the differences'
  sums, the caches."""
  trial_c = _evaluate_chunk(chunk_fn, trial_params, c, size, dtype)
  was_known = carry.known[c]
  current_c = lax.cond(
      was_known,
      lambda: carry.cache[c],
      lambda: _evaluate_chunk(chunk_fn, params, c, size, dtype),
  )
  mask = rows[c]
  d = jnp.where(mask, trial_c - current_c, jnp.zeros_like(trial_c))
  return carry._replace(
      i=carry.i + 1,
      s1=carry.s1 + jnp.sum(d),
      s2=carry.s2 + jnp.sum(d * d),
      n=carry.n + jnp.sum(mask).astype(jnp.int32),
      cache=carry.cache.at[c].set(current_c),
      known=carry.known.at[c].set(True),
      trial=carry.trial.at[c].set(trial_c),
      seen=carry.seen.at[c].set(True),
      evaluated=carry.evaluated + jnp.where(was_known, size, 2 * size).astype(jnp.int32),
      bad=carry.bad | jnp.any(mask & ~jnp.isfinite(trial_c)),
  )


def _outcome(state: SequentialState, carry: _Carry, rows, temperature, log_ratio,
             finite_move, dtype, cold) -> Outcome:
  """The decision, the losses it read and the state after the test."""
  accepted, bad, n = carry.accepted, carry.bad, carry.n
  read = rows & carry.seen[:, None]
  trial_loss = jnp.where(bad | ~finite_move, jnp.nan, _masked_mean(carry.trial, read))
  prob = _acceptance_probability(accepted, bad, carry.s1 / n.astype(dtype), temperature,
                                 log_ratio, dtype, cold)
  after = state._replace(
      losses=jnp.where(accepted, carry.trial, carry.cache),
      known=jnp.where(accepted, carry.seen, carry.known),
      used=n,
      evaluated=carry.evaluated,
  )
  return Outcome(
      decision=acceptance.Decision(accepted=accepted, acceptance_probability=prob.astype(dtype)),
      current_loss=_masked_mean(carry.cache, read),
      trial_loss=trial_loss,
      state=after,
  )


def decide(
    key: jax.Array,
    state: SequentialState,
    chunk_fn: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    trial_params: PyTree,
    temperature: jax.Array,
    log_ratio: Any,
    finite_move: jax.Array,
    *,
    cold: bool,
) -> Outcome:
  """Runs the sequential test for the move ``params -> trial_params``.

  One ``lax.while_loop`` over the chunks, in the order
  ``jax.random.permutation(jax.random.fold_in(key, 1), num_chunks)``; the
  uniform of the finite-temperature test is ``jax.random.uniform(key, ())``,
  as in :func:`~amc_jax.metropolis_decision`, so that a test that reads every
  chunk makes the full-batch decision with the same random numbers.
  """
  chunks, size = state.losses.shape
  dtype = state.losses.dtype
  rows = _rows(state)
  order = jax.random.permutation(jax.random.fold_in(key, 1), chunks)
  threshold = _threshold(key, temperature, log_ratio, dtype, cold)
  n_float = state.num_examples.astype(dtype)
  # The looks that may stop before the whole data set share the error budget.
  early_looks = jnp.sum(state.looks[:-1].astype(jnp.int32))

  def exact(cache, trial):
    """The full-batch decision, from the means over every example."""
    current = _masked_mean(cache, rows)
    proposed = jnp.where(finite_move, _masked_mean(trial, rows), jnp.nan)
    return acceptance.metropolis_decision(
        key, current, proposed, temperature, 0.0 if cold else log_ratio, cold=cold).accepted

  def body(carry):
    carry = _read_chunk(carry, order[carry.i], chunk_fn, params, trial_params, rows, size,
                        dtype)
    # One look: is the mean of the differences clearly on one side?
    stat = _t_statistic(carry.s1, carry.s2, carry.n.astype(dtype), n_float, threshold)
    t = critical_value(state.confidence, early_looks, carry.n)
    enough = (carry.n >= MIN_EXAMPLES) & state.looks[carry.i - 1]
    below, above = enough & (stat < -t), enough & (stat > t)
    everything = carry.i >= chunks
    # The exact decision reads all N cached losses: only on the last look.
    full = lax.cond(everything, exact, lambda *_: jnp.zeros([], bool), carry.cache, carry.trial)
    accepted = jnp.where(everything, full, below) & ~carry.bad & finite_move
    done = carry.bad | everything | below | above | ~finite_move
    return carry._replace(done=done, accepted=accepted)

  zero, no = jnp.zeros([], dtype), jnp.zeros([], bool)
  count = jnp.zeros([], jnp.int32)
  init = _Carry(count, zero, zero, count, state.losses, state.known,
                jnp.zeros_like(state.losses), jnp.zeros_like(state.known), count, no, no, no)
  carry = lax.while_loop(lambda carry: ~carry.done, body, init)
  return _outcome(state, carry, rows, temperature, log_ratio, finite_move, dtype, cold)


def cached_loss(state: SequentialState) -> jax.Array:
  """The mean of the cached per-example losses over the known chunks (the full
  loss once every chunk is known; inf before any is)."""
  read = _rows(state) & state.known[:, None]
  return jnp.where(jnp.any(read), _masked_mean(state.losses, read), jnp.inf)
