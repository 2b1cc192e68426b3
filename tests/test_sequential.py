"""The sequential acceptance test: error rates, exactness, the step's structure, fit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax
from amc_jax._src import sequential as sequential_lib

# A linear model with per-example squared errors: the sign of every move's
# full-data loss change is known exactly.
N, B, D = 2000, 100, 4
_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(N, D)), jnp.float32)
W_TRUE = jnp.asarray([1.0, -2.0, 0.5, 3.0], jnp.float32)
Y = X @ W_TRUE + jnp.asarray(_rng.normal(size=N), jnp.float32)


def per_example(w, x, y):
  return (jnp.sum(x * w[None, :], axis=1) - y) ** 2


def chunk_fn(w, c):
  x = jax.lax.dynamic_slice_in_dim(X, c * B, B)
  y = jax.lax.dynamic_slice_in_dim(Y, c * B, B)
  return per_example(w, x, y)


def full_loss(w):
  return jnp.mean(per_example(w, X, Y))


def fixed_first_chunk(key, state, chunk_fn, params, trial, temperature, log_ratio, finite, *, cold):
  """The deliberately wrong variant: decide on the first chunk of the random
  order, whatever its noise (a fixed-size minibatch)."""
  del temperature, log_ratio, cold
  c = jax.random.permutation(jax.random.fold_in(key, 1), state.losses.shape[0])[0]
  d = jnp.mean(chunk_fn(trial, c) - chunk_fn(params, c))
  accepted = (d <= 0) & finite
  return accepted


def decisions(decide, confidence, moves, base):
  test = amc_jax.SequentialTest(num_examples=N, chunk_size=B, confidence=confidence)
  state = sequential_lib.init(test)

  @jax.jit
  def one(key, move):
    trial = base + move
    out = decide(key, state, chunk_fn, base, trial, jnp.float32(0.0), 0.0, jnp.asarray(True),
                 cold=True)
    return out if isinstance(out, jax.Array) else (out.decision.accepted, out.state.used)

  keys = jax.random.split(jax.random.key(1), moves.shape[0])
  return jax.vmap(one)(keys, moves)


def hard_moves(count):
  """Moves near the minimum whose loss changes are of the order of one
  chunk's noise: a fixed chunk often gets their sign wrong."""
  base = W_TRUE + 0.01
  moves = 0.01 * jax.random.normal(jax.random.key(2), (count, D))
  truth = jax.vmap(lambda m: full_loss(base + m) - full_loss(base) <= 0)(moves)
  return base, moves, truth


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_wrong_decisions_stay_within_the_requested_level_and_a_fixed_chunk_exceeds_it(confidence):
  count = 4000
  base, moves, truth = hard_moves(count)
  accepted, used = decisions(sequential_lib.decide, confidence, moves, base)
  wrong = float(jnp.mean(accepted != truth))
  level = 1.0 - confidence
  se = np.sqrt(level * (1 - level) / count)
  assert wrong <= level + 2 * se, (wrong, level)
  # The test reads more than one chunk for some moves and stops early for others.
  assert int(jnp.min(used)) == B and int(jnp.max(used)) == N
  # The deliberately wrong variant: a fixed first chunk.
  fixed = decisions(fixed_first_chunk, confidence, moves, base)
  wrong_fixed = float(jnp.mean(fixed != truth))
  assert wrong_fixed > level + 4 * se, (wrong_fixed, level)


def test_a_confidence_of_one_reads_everything_and_makes_the_full_batch_decisions_bit_for_bit():
  seq = amc_jax.amc(0.05, epsilon=0.1, n_reset=5, seed=3,
                    sequential=amc_jax.SequentialTest(N, B, confidence=1.0))
  full = amc_jax.amc(0.05, epsilon=0.1, n_reset=5, seed=3)

  def run(tx, **extra):
    @jax.jit
    def step(w, state):
      updates, state = tx.update(None, state, w, **extra)
      return optax.apply_updates(w, updates), state

    w, state, accepted = jnp.zeros(D), tx.init(jnp.zeros(D)), []
    for _ in range(150):
      w, state = step(w, state)
      accepted.append(bool(state.info.accepted))
    return w, state, accepted

  w_seq, s_seq, a_seq = run(seq, chunk_fn=chunk_fn)
  w_full, s_full, a_full = run(full, value_fn=full_loss)
  assert a_seq == a_full and 5 < sum(a_seq) < 145
  chex.assert_trees_all_equal(w_seq, w_full)
  chex.assert_trees_all_equal(s_seq.mu, s_full.mu)
  assert s_seq.sigma == s_full.sigma and s_seq.n_reject == s_full.n_reject
  assert int(s_seq.sequential.used) == N
  np.testing.assert_allclose(s_seq.loss, s_full.loss, rtol=1e-6)


def test_temperature_and_its_uniform_are_those_of_the_full_batch_step():
  # At T > 0 the threshold uses the same uniform as metropolis_decision.
  seq = amc_jax.metropolis(0.1, temperature=0.05, seed=4,
                           sequential=amc_jax.SequentialTest(N, B, confidence=1.0))
  full = amc_jax.metropolis(0.1, temperature=0.05, seed=4)
  w = W_TRUE + 0.05
  s1, s2 = seq.init(w), full.init(w)
  step1 = jax.jit(lambda w, s: seq.update(None, s, w, chunk_fn=chunk_fn))
  step2 = jax.jit(lambda w, s: full.update(None, s, w, value_fn=full_loss))
  for _ in range(40):
    u1, s1 = step1(w, s1)
    u2, s2 = step2(w, s2)
    assert bool(s1.info.accepted) == bool(s2.info.accepted)
    w = optax.apply_updates(w, u1)
  assert 0 < int(s1.n_accept) < 40


def _while_loops(jaxpr):
  """Every while equation of a jaxpr, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "while":
      found.append(eqn)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else [value]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += _while_loops(inner)
  return found


def test_the_jitted_step_is_one_while_loop_and_compiles_once():
  tx = amc_jax.amc(0.05, sequential=amc_jax.SequentialTest(N, B), seed=0)

  @jax.jit
  def step(w, state):
    updates, state = tx.update(None, state, w, chunk_fn=chunk_fn)
    return optax.apply_updates(w, updates), state

  w, state = jnp.zeros(D), tx.init(jnp.zeros(D))
  jaxpr = jax.make_jaxpr(step)(w, state).jaxpr
  # One loop over the chunks, the only one that carries the [chunks, B] cache
  # or reads the data; the others are the 0-trip loops that materialise the
  # normals, the move and the trial point (they carry params-sized values).
  loops = _while_loops(jaxpr)
  over_chunks = [e for e in loops if any(v.aval.shape == (N // B, B) for v in e.outvars)]
  assert len(over_chunks) == 1
  for e in loops:
    if e is not over_chunks[0]:
      assert all(v.aval.size <= D for v in e.outvars), [v.aval for v in e.outvars]
  for _ in range(3):
    w, state = step(w, state)
  assert step._cache_size() == 1


def test_a_non_finite_chunk_loss_is_never_accepted():
  def nan_chunk(w, c):
    losses = chunk_fn(w, c)
    return jnp.where(c == 3, jnp.nan, losses)

  tx = amc_jax.amc(0.05, sequential=amc_jax.SequentialTest(N, B, confidence=1.0), seed=0)
  w, state = jnp.zeros(D), tx.init(jnp.zeros(D))
  for _ in range(5):
    updates, state = tx.update(None, state, w, chunk_fn=nan_chunk)
    assert not bool(state.info.accepted)
    w = optax.apply_updates(w, updates)
  chex.assert_trees_all_equal(w, jnp.zeros(D))


def test_the_cache_saves_the_current_params_evaluations():
  tx = amc_jax.amc(1.0, sequential=amc_jax.SequentialTest(N, B, confidence=1.0), seed=0)
  w = W_TRUE
  state = tx.init(w)
  _, state = tx.update(None, state, w, chunk_fn=chunk_fn)   # cold cache: x and x'
  assert int(state.sequential.evaluated) == 2 * N
  _, state = tx.update(None, state, w, chunk_fn=chunk_fn)   # rejected: the cache is warm
  assert not bool(state.info.accepted)
  assert int(state.sequential.evaluated) == N
  np.testing.assert_allclose(state.loss, full_loss(w), rtol=1e-6)


def test_stationary_distribution_at_finite_temperature_on_a_gaussian():
  # U(x) = mean_i (x - y_i)^2 / 2 = (x - ybar)^2 / 2 + const: exp(-U/T) is a
  # Gaussian with mean ybar and variance T. 64 independent chains; the error
  # bars come from their spread. Measured bias of the variance: see README.
  n, b, t = 1000, 100, 0.01
  y = jnp.asarray(np.random.default_rng(5).normal(size=n), jnp.float32)

  def chunk(x, c):
    return 0.5 * (x[0] - jax.lax.dynamic_slice_in_dim(y, c * b, b)) ** 2

  def chain(seed, confidence):
    tx = amc_jax.metropolis(0.2, temperature=t, seed=seed,
                            sequential=amc_jax.SequentialTest(n, b, confidence))
    x0 = jnp.full((1,), jnp.mean(y))

    def body(carry, _):
      x, state = carry
      updates, state = tx.update(None, state, x, chunk_fn=chunk)
      x = optax.apply_updates(x, updates)
      return (x, state), x[0]

    _, xs = jax.lax.scan(body, (x0, tx.init(x0)), None, length=3000)
    return xs[500:]

  for confidence in (0.95, 1.0):
    xs = jax.jit(jax.vmap(lambda s: chain(s, confidence)))(jnp.arange(64))
    means = jnp.mean(xs, axis=1)
    variances = jnp.var(xs, axis=1)
    mean_err = float(jnp.abs(jnp.mean(means) - jnp.mean(y)))
    ratio = float(jnp.mean(variances) / t)
    ratio_se = float(jnp.std(variances) / t / np.sqrt(64))
    assert mean_err < 4 * float(jnp.std(means)) / np.sqrt(64) + 1e-3
    assert abs(ratio - 1.0) < 4 * ratio_se + 0.05, (confidence, ratio, ratio_se)


# --- fit --------------------------------------------------------------------------


def _data(seed=0, n=1200):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8)).astype(np.float32)
  w = rng.normal(size=(8, 3)).astype(np.float32)
  labels = np.argmax(x @ w + 1.5 * rng.normal(size=(n, 3)), axis=1).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(labels)


def _init(key):
  k1, k2 = jax.random.split(key)
  return {"w1": 0.3 * jax.random.normal(k1, (8, 16)), "w2": 0.3 * jax.random.normal(k2, (16, 3))}


def _per_example_ce(p, batch):
  x, labels = batch
  logits = jnp.tanh(x @ p["w1"]) @ p["w2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _mean_ce(p, batch):
  return jnp.mean(_per_example_ce(p, batch))


@pytest.mark.slow
def test_fit_with_minibatches_does_not_get_worse_with_time_and_beats_a_fixed_minibatch():
  # The recipe: fit(..., batch_size=B) with a per-example loss, epsilon 0.
  # The same run on fixed minibatches of B (sequential=False) stalls at their
  # noise floor; with the paper's epsilon, mu follows noise and it drifts.
  data = _data()
  full = jax.jit(lambda p: _mean_ce(p, data))
  recipe = amc_jax.amc(3e-2, n_reset=100, seed=0)
  paper = amc_jax.amc(3e-2, epsilon=1e-2, n_reset=100, seed=0)
  for seed in range(3):
    losses = {}
    for name, tx, kw in (("recipe", recipe, {}), ("fixed", recipe, dict(sequential=False)),
                         ("fixed, paper's epsilon", paper, dict(sequential=False))):
      loss = _per_example_ce if name == "recipe" else _mean_ce
      r = amc_jax.fit(tx, _init, loss, data,
                      steps=4000, batch_size=50, key=seed, eval_fn=full, eval_every=1000,
                      progress=False, **kw)
      losses[name] = np.asarray(r.history["eval"])
    assert losses["recipe"][-1] < losses["recipe"][0], (seed, losses)
    assert losses["recipe"][-1] < losses["fixed"][-1], (seed, losses)
    assert losses["recipe"][-1] < losses["fixed, paper's epsilon"][-1], (seed, losses)


def test_fit_defaults_to_the_test_for_monte_carlo_minibatches_and_counts_data_passes():
  data = _data(n=1000)
  tx = amc_jax.amc(3e-2, seed=0)
  r = amc_jax.fit(tx, _init, _per_example_ce, data, steps=200, batch_size=50, progress=False,
                  log_every=100)
  state = r.opt_state
  assert state.sequential is not None and state.sequential.losses.shape == (20, 50)
  passes = r.history["data_passes"]
  assert passes.shape == (2,) and 0 < passes[0] < passes[1]
  # A full-batch Monte Carlo step is one pass; a gradient step on B rows is B / N.
  full = amc_jax.fit(tx, _init, _mean_ce, data, steps=10, progress=False)
  np.testing.assert_allclose(full.history["data_passes"], [10.0], rtol=1e-6)
  adam = amc_jax.fit(optax.sgd(0.1), _init, _per_example_ce, data, steps=10, batch_size=50,
                     progress=False)
  np.testing.assert_allclose(adam.history["data_passes"], [0.5], rtol=1e-6)
  fixed = amc_jax.fit(tx, _init, _mean_ce, data, steps=10, batch_size=50, sequential=False,
                      progress=False)
  np.testing.assert_allclose(fixed.history["data_passes"], [1.0], rtol=1e-6)


def test_fit_with_a_mean_form_loss_tests_means_of_row_groups():
  data = _data(n=1000)
  tx = amc_jax.amc(3e-2, seed=0)
  r = amc_jax.fit(tx, _init, _mean_ce, data, steps=100, batch_size=50, progress=False)
  # Chunks of 50 rows are 10 groups of 5; 1000 rows are 200 groups.
  assert r.opt_state.sequential.losses.shape == (20, 10)
  assert int(r.opt_state.sequential.num_examples) == 200


def test_fit_runs_the_test_a_transformation_was_built_with():
  data = _data(n=1000)
  test = amc_jax.SequentialTest(num_examples=1000, chunk_size=100, confidence=1.0)
  tx = amc_jax.amc(3e-2, seed=0, sequential=test)
  r = amc_jax.fit(tx, _init, _per_example_ce, data, steps=20, progress=False)
  assert r.opt_state.sequential.losses.shape == (10, 100)
  assert int(r.opt_state.sequential.used) == 1000  # confidence 1 reads everything
  with pytest.raises(ValueError, match="num_examples=1000, but data has 900"):
    amc_jax.fit(tx, _init, _per_example_ce, (data[0][:900], data[1][:900]), steps=2,
                progress=False)


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "test, error, match",
    [
        (amc_jax.SequentialTest(None, 100), TypeError, "num_examples must be an int"),
        (amc_jax.SequentialTest(1000, 5), ValueError, "chunk_size must be >= 10"),
        (amc_jax.SequentialTest(1000, 100, 0.0), ValueError, r"confidence must be a number in \(0, 1\]"),
        (amc_jax.SequentialTest(1000, 100, 1.5), ValueError, "confidence"),
        ("0.95", TypeError, "must be an amc_jax.SequentialTest"),
    ],
)
def test_bad_tests_are_refused_at_construction(test, error, match):
  with pytest.raises(error, match=match):
    amc_jax.amc(0.1, sequential=test)


def test_bad_uses_are_refused_with_a_clear_message():
  tx = amc_jax.amc(0.1, sequential=amc_jax.SequentialTest(N, B))
  state = tx.init(jnp.zeros(D))
  with pytest.raises(TypeError, match="pass chunk_fn="):
    tx.update(None, state, jnp.zeros(D), value_fn=full_loss)
  with pytest.raises(ValueError, match=r"must return the 100 per-example losses"):
    tx.update(None, state, jnp.zeros(D), chunk_fn=lambda w, c: jnp.zeros(7))
  with pytest.raises(ValueError, match="value= has no meaning"):
    tx.update(None, state, jnp.zeros(D), chunk_fn=chunk_fn, value=1.0)
  with pytest.raises(ValueError, match="one proposal and without signal norm"):
    amc_jax.amc(0.1, num_proposals=2, sequential=amc_jax.SequentialTest(N, B))
  plain = amc_jax.amc(0.1)
  with pytest.raises(ValueError, match="this state has none"):
    plain.update(None, plain.init(jnp.zeros(D)), jnp.zeros(D), chunk_fn=chunk_fn)
  data = _data(n=1000)
  with pytest.raises(ValueError, match="drop batch_size"):
    amc_jax.fit(plain, _init, _per_example_ce, data, steps=2, batch_size=50,
                sequential=amc_jax.SequentialTest(chunk_size=50), progress=False)
  with pytest.raises(TypeError, match="sequential must be None, False or"):
    amc_jax.fit(plain, _init, _per_example_ce, data, steps=2, sequential=True, progress=False)


def test_the_looks_follow_the_growth_schedule_and_survive_a_resumed_fit():
  assert amc_jax.SequentialTest(1000, 100).look_after == (1, 2, 4, 8, 10)
  assert amc_jax.SequentialTest(1000, 100, growth=1).look_after == tuple(range(1, 11))
  assert amc_jax.SequentialTest(1000, 100, growth=1.5).look_after == (1, 2, 3, 4, 6, 8, 10)
  assert amc_jax.SequentialTest(1024, 128).look_after == (1, 2, 4, 8)
  # A growth just above 1 looks after every chunk, without iterating over the
  # ~1e13 powers below 40 (the schedule jumps to the next power that counts).
  assert sequential_lib.look_after(40, 1.0 + 1e-12) == tuple(range(1, 41))
  state = sequential_lib.init(amc_jax.SequentialTest(1000, 100))
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(state.looks)) + 1, [1, 2, 4, 8, 10])
  for bad in (0.5, float("inf"), True):
    with pytest.raises(ValueError, match="growth must be a number >= 1"):
      amc_jax.amc(0.1, sequential=amc_jax.SequentialTest(1000, 100, growth=bad))
  # A fit continued from a sequential state keeps the state's test.
  x, labels = _data()
  test = amc_jax.SequentialTest(chunk_size=100, confidence=0.9, growth=1.5)
  params = {"w1": jnp.full((8, 8), 0.1, jnp.float32), "w2": jnp.full((8, 3), 0.1, jnp.float32)}
  first = amc_jax.fit(amc_jax.amc(0.05, seed=0), params,
                      _per_example_ce, (x, labels), steps=20, sequential=test, progress=False)
  again = amc_jax.fit(amc_jax.amc(0.05, seed=0), first.params, _per_example_ce, (x, labels),
                      steps=20, opt_state=first.opt_state, progress=False)
  s = again.opt_state.sequential
  assert float(s.growth) == 1.5 and abs(float(s.confidence) - 0.9) < 1e-6
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(s.looks)) + 1, [1, 2, 3, 4, 6, 8, 12])
