"""amc_jax.fit: the scanned fitting loop, minibatches, ensembles, progressive batching."""

import functools
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax
from amc_jax._src import chunks as chunks_lib

N = 256


def make_data(n=N, seed=0):
  x = jax.random.uniform(jax.random.key(seed), (n, 2), jnp.float32, -1.0, 1.0)
  y = jnp.tanh(x @ jnp.asarray([1.5, -2.0])) + 0.25
  return x, y


def init_params(key):
  k1, k2 = jax.random.split(key)
  return {
      "w": 0.1 * jax.random.normal(k1, (2, 4)),
      "b": jnp.zeros((4,)),
      "a": 0.1 * jax.random.normal(k2, (4,)),
  }


def loss_fn(params, batch):
  x, y = batch
  h = jnp.tanh(x @ params["w"] + params["b"][None, :])
  return jnp.mean((h @ params["a"] - y) ** 2)


PARAMS = init_params(jax.random.key(1))
DATA = make_data()


def amc_tx(**kw):
  return amc_jax.amc(0.05, epsilon=0.1, n_reset=10, seed=3, **kw)


# fit caches its compiled chunks by the identity of tx and loss_fn, so tests
# that share TX, loss_fn, data shapes and these settings share programs:
# compilation, not running, is what a test here costs.
TX = amc_tx()
KW = dict(chunk=100, log_every=50, progress=False)


def hand_scan(tx, params, state, n_steps, value_fn_at, with_value=False):
  """A bare lax.scan of tx.update: the reference fit must reproduce."""

  @jax.jit
  def run(params, state):
    def body(carry, t):
      params, state = carry
      value_fn = value_fn_at(t)
      extra = {"value": value_fn(params)} if with_value else {}
      updates, state = tx.update(None, state, params, value_fn=value_fn, **extra)
      return (optax.apply_updates(params, updates), state), state.info.accepted

    return jax.lax.scan(body, (params, state), jnp.arange(n_steps, dtype=jnp.int32))

  return run(params, state)


def minibatch_at(key, t, batch_size, data=DATA):
  """The documented minibatch of step t."""
  data_key = jax.random.fold_in(jax.random.key(key) if isinstance(key, int) else key, 0)
  idx = jax.random.randint(jax.random.fold_in(data_key, t), (batch_size,), 0, N)
  return jax.tree_util.tree_map(lambda x: x[idx], data)


@functools.lru_cache(maxsize=None)
def minibatch_reference():
  """A bare scan of 200 minibatch steps of TX, compared on value= (key 5, B = 32)."""
  key = jax.random.key(5)
  value_fn_at = lambda t: (lambda p: loss_fn(p, minibatch_at(key, t, 32)))
  (params, state), _ = hand_scan(TX, PARAMS, TX.init(PARAMS), 200, value_fn_at, with_value=True)
  return params, state


# --- batch mode, minibatch mode, history ---------------------------------------


def test_full_batch_fit_equals_a_bare_scan_and_history_matches_state():
  tx = TX
  result = amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=300, **KW)
  (params, state), accepted = hand_scan(
      tx, PARAMS, tx.init(PARAMS), 300, lambda t: lambda p: loss_fn(p, DATA)
  )
  chex.assert_trees_all_equal(result.params, params)
  chex.assert_trees_all_equal(result.opt_state, state)

  h = result.history
  np.testing.assert_array_equal(h["step"], np.arange(50, 301, 50))
  for name in ("loss", "acceptance", "sigma", "batch_size"):
    assert h[name].shape == (6,), name
  assert h["loss"][-1] == state.loss and h["sigma"][-1] == state.sigma
  windows = np.asarray(accepted).reshape(6, 50).mean(axis=1)
  np.testing.assert_allclose(h["acceptance"], windows, rtol=1e-6)
  assert round(h["acceptance"].sum() * 50) == int(state.n_accept)
  np.testing.assert_array_equal(h["batch_size"], N)
  assert np.all(np.diff(h["loss"]) <= 0)  # T = 0, fixed data: never uphill
  assert result.best_chain is None


def test_without_data_the_loss_takes_params_only():
  loss = lambda p: jnp.sum((p - jnp.arange(3.0)) ** 2)
  result = amc_jax.fit(TX, jnp.zeros(3), loss, steps=200, **KW)
  assert result.history["loss"][-1] < 0.1 * loss(jnp.zeros(3))
  assert result.history["loss"][-1] == loss(result.params)
  np.testing.assert_array_equal(result.history["batch_size"], 0)


@pytest.mark.parametrize("minibatch", [False, True], ids=["batch_mode_tx", "minibatch_tx"])
def test_minibatches_compare_both_losses_on_the_documented_minibatch(minibatch):
  # Whatever the mode of tx, fit passes value= (U(x) on this step's
  # minibatch), so both give the same chain as a replay with that value.
  tx = amc_tx(minibatch=True) if minibatch else TX
  result = amc_jax.fit(
      tx, PARAMS, loss_fn, DATA, steps=200, batch_size=32, key=5, sequential=False, **KW
  )
  params, state = minibatch_reference()
  chex.assert_trees_all_equal(result.params, params)
  chex.assert_trees_all_equal(result.opt_state, state)
  np.testing.assert_array_equal(result.history["batch_size"], 32)


EVALUATIONS = []


def counted_loss(params, batch):
  jax.debug.callback(lambda: EVALUATIONS.append(1))
  return loss_fn(params, batch)


@pytest.mark.parametrize(
    "tx, batch_size, expected",
    [
        (TX, None, 1 + 20),  # one to re-base the cache, then one per step
        (amc_tx(minibatch=True), None, 1 + 20),  # the flag does not matter
        (TX, 8, 2 * 20),  # U(x) and U(x') on every minibatch
    ],
    ids=["full_batch", "full_batch_minibatch_tx", "minibatches"],
)
def test_loss_evaluations_per_step(tx, batch_size, expected):
  EVALUATIONS.clear()
  result = amc_jax.fit(
      tx, PARAMS, counted_loss, DATA, steps=20, batch_size=batch_size, sequential=False,
      progress=False,
  )
  jax.effects_barrier()
  assert len(EVALUATIONS) == expected
  assert int(result.opt_state.count) == 20


def test_results_do_not_depend_on_chunk_or_log_every():
  a = amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=200, batch_size=32, key=5, **KW)
  b = amc_jax.fit(
      TX, PARAMS, loss_fn, DATA, steps=200, batch_size=32, key=5, chunk=40, log_every=20,
      progress=False,
  )
  # Passes are summed in float32 within a window: equal to rounding.
  np.testing.assert_allclose(
      b.history["data_passes"][4::5], a.history["data_passes"][1::2], rtol=1e-6
  )
  chex.assert_trees_all_equal(a.params, b.params)
  np.testing.assert_array_equal(b.history["loss"][4::5], a.history["loss"][1::2])


def test_donate_trains_in_the_callers_buffers_with_the_same_result():
  # donate=True hands fit the caller's params and state (no copy): the same
  # result bit for bit, and the caller's arrays are deleted, as with
  # jax.jit's donate_argnums. The wrong variant, a copy, would keep them.
  a = amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=200, batch_size=32, key=5, **KW)
  params = jax.tree_util.tree_map(jnp.copy, PARAMS)
  state = TX.init(params)
  b = amc_jax.fit(TX, params, loss_fn, DATA, steps=200, batch_size=32, key=5, donate=True,
                  opt_state=state, **KW)
  chex.assert_trees_all_equal(a.params, b.params)
  np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
  assert all(x.is_deleted() for x in jax.tree_util.tree_leaves(params))
  assert all(x.is_deleted() for x in jax.tree_util.tree_leaves(state.sigma))
  c = amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=100, batch_size=32, **KW)  # default: copies
  assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(PARAMS))
  assert c.steps_taken == 100
  with pytest.raises(TypeError, match="donate must be True or False"):
    amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=100, donate="yes", **KW)


def test_a_resumed_full_batch_fit_rebases_the_cached_loss():
  # A state that trained on minibatches caches a minibatch loss; a full-batch
  # fit that compared against it would be wrong. With a huge sigma every
  # proposal is rejected, so the cache would survive unless re-based.
  huge = TX.init(PARAMS)._replace(sigma=jnp.asarray(100.0, jnp.float32))
  first = amc_jax.fit(
      TX, PARAMS, loss_fn, DATA, steps=100, batch_size=32, opt_state=huge, sequential=False,
      **KW,
  )
  assert first.opt_state.loss != loss_fn(first.params, DATA)
  second = amc_jax.fit(
      TX, first.params, loss_fn, DATA, steps=100, opt_state=first.opt_state, **KW
  )
  assert int(second.opt_state.n_accept) == int(first.opt_state.n_accept)
  assert second.opt_state.loss == loss_fn(first.params, DATA)


# --- evaluation, gradient optimizers, progress --------------------------------------


def test_eval_fn_runs_every_k_steps_on_the_params_of_that_step():
  seen = []

  def eval_fn(params):
    seen.append(params)
    return {"mse": loss_fn(params, DATA), "twice": 2.0 * loss_fn(params, DATA)}

  result = amc_jax.fit(
      TX, PARAMS, loss_fn, DATA, steps=400, eval_fn=eval_fn, eval_every=100, **KW
  )
  np.testing.assert_array_equal(result.history["eval_step"], [100, 200, 300, 400])
  assert result.history["eval"]["mse"].shape == (4,)
  np.testing.assert_allclose(result.history["eval"]["twice"], 2 * result.history["eval"]["mse"])
  # Full batch at T = 0: the evaluated loss is the cached one of that step.
  np.testing.assert_array_equal(result.history["eval"]["mse"], result.history["loss"][1::2])
  chex.assert_trees_all_equal(seen[-1], result.params)


def test_gradient_optimizer_through_the_same_loop():
  key = jax.random.key(4)
  value_fn_at = lambda t: (lambda p: loss_fn(p, minibatch_at(key, t, 32)))
  # optax.adam's bias correction mixes a Python float with an int32 count,
  # which strict dtype promotion (set for the tests) rejects.
  with jax.numpy_dtype_promotion("standard"):
    tx = optax.adam(1e-2)
    result = amc_jax.fit(
        tx, PARAMS, loss_fn, DATA, steps=200, batch_size=32, key=key, chunk=100,
        log_every=100, progress=False,
    )

    @jax.jit
    def run(params, state):
      def body(carry, t):
        params, state = carry
        loss, grads = jax.value_and_grad(value_fn_at(t))(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

      return jax.lax.scan(body, (params, state), jnp.arange(200, dtype=jnp.int32))

    (params, state), losses = run(PARAMS, tx.init(PARAMS))
  chex.assert_trees_all_close(result.params, params, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(result.history["loss"], losses[99::100], rtol=1e-6)
  assert np.isnan(result.history["acceptance"]).all()
  assert np.isnan(result.history["sigma"]).all()
  assert loss_fn(result.params, DATA) < 0.5 * loss_fn(PARAMS, DATA)


def test_gradient_transformations_with_extra_args_get_value_grad_and_value_fn():
  received = []

  def update(updates, state, params=None, **extra):
    received.append(sorted(extra))
    np.testing.assert_equal(
        jax.tree_util.tree_structure(extra["grad"]), jax.tree_util.tree_structure(params)
    )
    return jax.tree_util.tree_map(lambda g: -0.1 * g, updates), state

  tx = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
  result = amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=20, progress=False)
  assert received and received[0] == ["grad", "value", "value_fn"]
  assert result.history["loss"][-1] < loss_fn(PARAMS, DATA)


def test_tqdm_progress_bar(capsys):
  pytest.importorskip("tqdm")  # the optional [progress] extra; [test] installs it
  kw = dict(KW, steps=200)
  del kw["progress"]
  amc_jax.fit(TX, PARAMS, loss_fn, DATA, progress=True, **kw)
  err = capsys.readouterr().err
  assert "200/200" in err and "acceptance" in err and "sigma" in err


def test_progress_lines_and_silence(capsys, monkeypatch):
  kw = dict(KW, steps=200)
  del kw["progress"]
  lines = []
  amc_jax.fit(TX, PARAMS, loss_fn, DATA, progress=lines.append, **kw)
  assert len(lines) == 2 and lines[-1].startswith("step 200/200  loss ")

  amc_jax.fit(TX, PARAMS, loss_fn, DATA, progress=False, **kw)
  assert capsys.readouterr() == ("", "")

  monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # tqdm not installed
  amc_jax.fit(TX, PARAMS, loss_fn, DATA, progress=True, **kw)
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 2 and out[0].startswith("step 100/200") and "sigma" in out[0]


# --- compilation and dispatch -----------------------------------------------------


def count_dispatches(monkeypatch):
  """Counts calls of the compiled chunk; returns (calls, the real jitted chunk)."""
  calls = []
  real = chunks_lib.run_chunk

  def counting(*args, **kwargs):
    calls.append(kwargs["spec"].ensemble)
    return real(*args, **kwargs)

  monkeypatch.setattr(chunks_lib, "run_chunk", counting)
  return calls, real


def test_one_compiled_program_per_chunk_length_and_none_on_a_second_fit(monkeypatch):
  tx = amc_tx()
  calls, chunk_fn = count_dispatches(monkeypatch)
  before = chunk_fn._cache_size()
  amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=500, **KW)
  assert chunk_fn._cache_size() == before + 1
  assert len(calls) == 5
  amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=530, chunk=100, log_every=10, progress=False)
  # The remainder chunk (30 steps) and log_every=10 each change the program.
  assert chunk_fn._cache_size() == before + 3
  amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=300, **KW)
  assert chunk_fn._cache_size() == before + 3


def test_m_chains_cost_one_program_and_one_dispatch_per_chunk(monkeypatch):
  # M separate runs would cost M dispatches per chunk (and M compilations for
  # M transformations); the ensemble costs what one chain costs. The time per
  # chain is measured in benchmarks/speed/fit.py.
  calls, chunk_fn = count_dispatches(monkeypatch)
  before = chunk_fn._cache_size()
  for m in (4, 32):
    amc_jax.fit(
        TX, init_params, loss_fn, DATA, steps=200, n_chains=m, batch_size=32, key=9,
        sequential=False, **KW,
    )
  assert calls == [True] * 4  # 2 chunks each
  # Each ensemble size is one program; nothing is compiled per chain.
  assert chunk_fn._cache_size() <= before + 2


# --- ensembles ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch_size, sequential",
    [(None, None), (32, False), (32, None)],
    ids=["full_batch", "minibatch", "sequential"],
)
def test_chain_k_of_an_ensemble_is_the_single_chain_fit_of_its_params_and_state(
    batch_size, sequential
):
  m, key, tx = 4, 9, TX
  params = jax.vmap(init_params)(jax.random.split(jax.random.key(0), m))
  kw = dict(KW, steps=200, batch_size=batch_size, key=key, sequential=sequential)
  ens = amc_jax.fit(tx, params, loss_fn, DATA, n_chains=m, **kw)
  # The documented initial ensemble state: init_ensemble seeded by tx's key.
  state0 = amc_jax.init_ensemble(tx, params, tx.init(PARAMS).key)
  assert ens.history["loss"].shape == (4, m) and ens.history["sigma"].shape == (4, m)
  assert ens.history["step"].shape == (4,)
  for k in (0, 3):
    one = amc_jax.fit(
        tx, amc_jax.select_chain(params, k), loss_fn, DATA,
        opt_state=amc_jax.select_chain(state0, k), **kw,
    )
    # The same decisions and adaptation, exactly. The params agree bit for bit
    # on jax 0.10.2; jax 0.12's batched step rounds a few moves differently in
    # the last bit, and the drift stays ~1e-7 over 200 steps: never enough here
    # to change a decision.
    chex.assert_trees_all_close(
        one.params, amc_jax.select_chain(ens.params, k), rtol=1e-5, atol=1e-6
    )
    assert int(one.opt_state.n_accept) == int(ens.opt_state.n_accept[k])
    assert one.opt_state.sigma == ens.opt_state.sigma[k]
    np.testing.assert_allclose(one.history["loss"], ens.history["loss"][:, k], rtol=1e-6)
    np.testing.assert_array_equal(one.history["acceptance"], ens.history["acceptance"][:, k])


def test_ensemble_from_an_init_function_and_the_best_chain():
  m = 4
  result = amc_jax.fit(TX, init_params, loss_fn, DATA, steps=200, n_chains=m, key=1, **KW)
  assert result.params["w"].shape == (m, 2, 4)
  final = result.history["loss"][-1]
  assert result.best_chain == int(np.argmin(final))
  best = amc_jax.select_chain(result.params, result.best_chain)
  assert loss_fn(best, DATA) == pytest.approx(float(final.min()), rel=1e-6)
  # The init function's keys: split(fold_in(key, 1), m).
  keys = jax.random.split(jax.random.fold_in(jax.random.key(1), 1), m)
  first = amc_jax.fit(
      TX, jax.vmap(init_params)(keys), loss_fn, DATA, steps=200, n_chains=m, key=1, **KW
  )
  chex.assert_trees_all_equal(first.params, result.params)


def test_ensemble_of_a_gradient_optimizer():
  result = amc_jax.fit(
      optax.sgd(0.1), init_params, loss_fn, DATA, steps=100, n_chains=3, progress=False
  )
  assert result.history["loss"].shape == (1, 3)
  assert np.isnan(result.history["acceptance"]).all()


# --- progressive batching ------------------------------------------------------------


def classification_data(n=1024):
  x = jax.random.normal(jax.random.key(0), (n, 2))
  labels = (x @ jnp.asarray([1.0, -1.0]) > 0).astype(jnp.float32)
  return x, labels


def logistic_loss(params, batch):
  x, labels = batch
  logits = x @ params["w"] + params["b"]
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def error_rate(params, batch):
  x, labels = batch
  return jnp.mean(((x @ params["w"] + params["b"]) > 0) != (labels > 0.5))


SIGMA0 = 0.05
CLASSIFY = classification_data()
CLASSIFY_TX = amc_jax.amc(SIGMA0, epsilon=0.1, n_reset=2, seed=0)
# log_every=1 so that the row after a growth shows sigma one step after it.
CLASSIFY_KW = dict(chunk=100, log_every=1, progress=False)


def test_progressive_batching_doubles_when_the_error_falls_and_resets_sigma():
  # Start from a classifier that is wrong on every point.
  params = {"w": jnp.asarray([-1.0, 1.0]), "b": jnp.zeros(())}
  chunk_fn = chunks_lib.run_chunk
  before = chunk_fn._cache_size()
  result = amc_jax.fit(
      CLASSIFY_TX, params, logistic_loss, CLASSIFY, steps=800,
      progressive=amc_jax.ProgressiveBatching(error_rate, start=256, threshold=0.1),
      **CLASSIFY_KW,
  )
  sizes = result.history["batch_size"]
  assert sizes.shape == (800,) and sizes[0] == 256 and sizes[-1] == 1024
  grown = np.flatnonzero(np.diff(sizes)) + 1  # first rows after each growth
  np.testing.assert_array_equal(sizes[grown], 2 * sizes[grown - 1])
  assert np.all(grown % 100 == 0)  # between chunks
  # Every growth reset sigma to sigma0 (no reset can happen within one step at
  # n_reset = 2) after it had shrunk.
  assert np.all(result.history["sigma"][grown] == np.float32(SIGMA0))
  assert np.all(result.history["sigma"][grown - 1] < SIGMA0)
  assert error_rate(result.params, CLASSIFY) < 0.1
  assert chunk_fn._cache_size() - before <= 3  # one program per minibatch size


def test_progressive_growth_follows_the_error_and_rebases_the_cache():
  params = {"w": jnp.asarray([1.0, -1.0]), "b": jnp.zeros(())}
  never = amc_jax.ProgressiveBatching(lambda p, b: jnp.ones(()), start=256)
  always = amc_jax.ProgressiveBatching(lambda p, b: jnp.zeros(()), start=256, factor=2)
  kw = dict(CLASSIFY_KW, steps=400)
  r = amc_jax.fit(CLASSIFY_TX, params, logistic_loss, CLASSIFY, progressive=never, **kw)
  np.testing.assert_array_equal(r.history["batch_size"], 256)
  r = amc_jax.fit(CLASSIFY_TX, params, logistic_loss, CLASSIFY, progressive=always, **kw)
  np.testing.assert_array_equal(r.history["batch_size"][::100], [256, 512, 1024, 1024])
  # Batch mode on the whole data set at the end: the cache is the true loss.
  assert r.opt_state.loss == logistic_loss(r.params, CLASSIFY)

  # The same run by hand: fixed minibatches order[:size], reset between them
  # (fit re-bases a given state's cache on its data).
  order = jax.random.permutation(jax.random.fold_in(jax.random.key(0), 2), 1024)
  p, s = params, CLASSIFY_TX.init(params)
  for size, n in ((256, 100), (512, 100), (1024, 200)):
    if size > 256:
      s = s._replace(
          sigma=jnp.asarray(SIGMA0, jnp.float32),
          mu=jax.tree_util.tree_map(jnp.zeros_like, s.mu),
          n_reject=jnp.zeros_like(s.n_reject),
      )
    batch = jax.tree_util.tree_map(lambda x: x[order[:size]], CLASSIFY)
    out = amc_jax.fit(
        CLASSIFY_TX, p, logistic_loss, batch, steps=n, opt_state=s, **CLASSIFY_KW
    )
    p, s = out.params, out.opt_state
  chex.assert_trees_all_equal(p, r.params)
  chex.assert_trees_all_equal(s, r.opt_state)


def test_progressive_batching_of_an_ensemble_grows_on_its_best_chain():
  params = {"w": jnp.tile(jnp.asarray([1.0, -1.0]), (3, 1)), "b": jnp.zeros((3,))}
  # Chain 0 starts right, the others wrong: chain 0 alone makes it grow.
  params["w"] = params["w"].at[1:].multiply(-1.0)
  r = amc_jax.fit(
      amc_jax.amc(1e-6, seed=0), params, logistic_loss, CLASSIFY, steps=200, chunk=100,
      n_chains=3, progressive=amc_jax.ProgressiveBatching(error_rate, start=512),
      progress=False,
  )
  np.testing.assert_array_equal(r.history["batch_size"], [512, 1024])
  np.testing.assert_array_equal(r.opt_state.sigma, np.float32(1e-6))  # all reset


# --- bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=0), ValueError, "steps must be >= 1"),
        (dict(steps=1.5), TypeError, "steps must be an int"),
        (dict(batch_size=300), ValueError, "exceeds the 256 examples"),
        (dict(batch_size=8, data=None), ValueError, "pass data= too"),
        (dict(chunk=30, log_every=7), ValueError, "must divide chunk=30"),
        (dict(eval_every=100), ValueError, "eval_every needs an eval_fn"),
        (dict(eval_fn=lambda p: 0.0, eval_every=150, chunk=100), ValueError,
         "multiple of chunk=100"),
        (dict(n_chains=3), ValueError, "leading chain axis"),
        (dict(progressive=amc_jax.ProgressiveBatching(error_rate), batch_size=8),
         ValueError, "drop batch_size"),
        (dict(progressive=amc_jax.ProgressiveBatching(error_rate)), ValueError,
         "start=500 exceeds the 256 examples"),
        (dict(progressive=amc_jax.ProgressiveBatching(error_rate, 10, 1)), ValueError,
         "factor must be >= 2"),
        (dict(progressive=(error_rate, 10)), TypeError, "ProgressiveBatching"),
        (dict(data={"x": jnp.zeros((4, 2)), "y": jnp.zeros(3)}), ValueError,
         "same leading"),
        (dict(loss_fn=lambda p: 0.0), TypeError, r"loss_fn\(params, batch\)"),
        (dict(data=None), TypeError, r"loss_fn\(params\) since there is no data"),
        (dict(tx=lambda p: p), TypeError, "GradientTransformation"),
        (dict(progress="yes"), TypeError, "progress must be"),
    ],
)
def test_bad_input_is_refused_with_a_message(kwargs, error, match):
  args = dict(tx=amc_tx(), params=PARAMS, loss_fn=loss_fn, data=DATA, steps=100,
              progress=False)
  args.update(kwargs)
  positional = [args.pop(name) for name in ("tx", "params", "loss_fn", "data")]
  with pytest.raises(error, match=match):
    amc_jax.fit(*positional, **args)


@pytest.mark.parametrize("make_tx", [lambda: TX, lambda: optax.adam(1e-2)],
                         ids=["amc", "adam"])
def test_a_continued_minibatch_fit_continues_the_data_stream(make_tx):
  """fit(100) then fit(100, opt_state=...) with the same key draws the
  minibatches of fit(200): the same params and history, bit for bit. For aMC,
  the wrong variant, restarting the stream (the state's count zeroed, which
  nothing else reads at a constant T), differs."""
  tx = make_tx()
  kw = dict(batch_size=32, sequential=False, progress=False, chunk=50)
  # optax.adam mixes a Python float with an int32 count (see above).
  with jax.numpy_dtype_promotion("standard"):
    whole = amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=200, **kw)
    first = amc_jax.fit(tx, PARAMS, loss_fn, DATA, steps=100, **kw)
    second = amc_jax.fit(tx, first.params, loss_fn, DATA, steps=100, opt_state=first.opt_state,
                         **kw)
  chex.assert_trees_all_equal(second.params, whole.params)
  rest = whole.history["loss"][len(first.history["loss"]):]
  np.testing.assert_array_equal(second.history["loss"], rest)
  if tx is TX:
    restarted = amc_jax.fit(
        tx, first.params, loss_fn, DATA, steps=100,
        opt_state=first.opt_state._replace(count=jnp.zeros([], jnp.int32)), **kw,
    )
    assert not np.array_equal(restarted.history["loss"], rest)


def test_max_seconds_stops_at_a_chunk_boundary_and_says_where():
  """A budget that the first chunk's compilation alone spends: fit runs that
  chunk (it was dispatched), starts no other, reports where it stopped in
  steps_taken, the history and the progress lines, and its params are those
  of a 20-step run."""
  lines = []
  r = amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=1000, chunk=20, log_every=20,
                  max_seconds=1e-3, progress=lines.append)
  assert r.steps_taken == 20, r.steps_taken
  assert r.history["step"][-1] == 20 and int(r.opt_state.count) == 20
  assert any("stopped after 20 of 1000 steps" in line for line in lines)
  full = amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=20, chunk=20, log_every=20, progress=False)
  assert full.steps_taken == 20
  chex.assert_trees_all_equal(r.params, full.params)
  for bad in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="max_seconds must be a finite number > 0"):
      amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=10, max_seconds=bad, progress=False)


# ----------------------------------------------------------------------------
# Random objectives: common random numbers (random_loss=True).

D_NOISY = 8


def noisy_loss(params, key, episodes=64):
  """A random objective with its minimum at x = 1: the mean over episodes of
  |x - 1 - 0.5 z_e|^2, z_e ~ N(0, I) drawn from ``key``."""
  z = jax.random.normal(key, (episodes, D_NOISY))
  return jnp.mean(jnp.sum((params["x"][None] - 1.0 - 0.5 * z) ** 2, axis=1))


def _noisy_run(common, steps=3000, seed=0):
  """A hand loop of aMC on ``noisy_loss``: U(x) and U(x') on the step's key
  (common random numbers), or, the wrong variant, on independent keys."""
  tx = amc_jax.amc(0.1, epsilon=0.0, n_reset=20, seed=seed, minibatch=True)
  params = {"x": jnp.zeros(D_NOISY)}
  data_key = jax.random.fold_in(jax.random.key(seed), 0)

  @jax.jit
  def run(params, state):
    def body(carry, t):
      params, state = carry
      k = jax.random.fold_in(data_key, t)
      k_trial = k if common else jax.random.fold_in(k, 1)
      updates, state = tx.update(None, state, params, value=noisy_loss(params, k),
                                 value_fn=lambda p: noisy_loss(p, k_trial))
      return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(body, (params, state), jnp.arange(steps))[0]

  return run(params, tx.init(params))


def test_random_loss_fit_is_common_random_numbers_and_converges():
  """fit(random_loss=True) is the hand loop with U(x) and U(x') on the key
  fold_in(fold_in(key, 0), t), bit for bit, and converges to the minimum
  (to within 0.1 rms per coordinate, near the noise of the mean over 64
  episodes, 0.5 / 8). Independent
  keys for U(x) and U(x') (the deliberately wrong variant) accept moves on
  noise: sigma never shrinks and x wanders, measurably farther from 1, over 4
  seeds."""
  tx = amc_jax.amc(0.1, epsilon=0.0, n_reset=20, seed=0, minibatch=True)
  result = amc_jax.fit(tx, {"x": jnp.zeros(D_NOISY)}, noisy_loss, steps=3000, key=0,
                       random_loss=True, chunk=1000, log_every=1000, progress=False)
  params, state = _noisy_run(common=True)
  chex.assert_trees_all_equal(result.params, params)
  np.testing.assert_array_equal(result.history["data_passes"], [2000.0, 4000.0, 6000.0])
  right, wrong = [], []
  for seed in range(4):
    p, s = _noisy_run(common=True, seed=seed)
    right.append(float(jnp.sqrt(jnp.mean((p["x"] - 1.0) ** 2))))
    assert float(s.sigma) < 0.08  # runs of rejections shrank sigma (five resets or more)
    p, s = _noisy_run(common=False, seed=seed)
    wrong.append(float(jnp.sqrt(jnp.mean((p["x"] - 1.0) ** 2))))
    assert float(s.sigma) == pytest.approx(0.1)  # never n_reset rejections in a row
  assert max(right) < 0.1, right
  assert min(wrong) > 2 * max(right), (right, wrong)


def test_random_loss_population_steps_its_coupled_chains_on_one_key():
  """population(amc) through fit(random_loss=True): the M coupled chains see
  the same episodes at each step (so cloning compares like with like) and fit
  is the hand loop with value_fn on fold_in(fold_in(key, 0), t), bit for bit.
  n_chains on a coupled transformation is refused, naming the fix."""
  m, steps = 4, 300
  tx = amc_jax.population(amc_jax.amc(0.1, epsilon=0.0, n_reset=20, seed=0, minibatch=True),
                          every=10, fraction=0.25, seed=0)
  params = {"x": jnp.zeros((m, D_NOISY))}
  result = amc_jax.fit(tx, params, noisy_loss, steps=steps, key=0, random_loss=True,
                       chunk=100, log_every=100, progress=False)
  data_key = jax.random.fold_in(jax.random.key(0), 0)

  def body(carry, t):
    params, state = carry
    k = jax.random.fold_in(data_key, t)
    updates, state = tx.update(None, state, params, value_fn=lambda p: noisy_loss(p, k))
    return (optax.apply_updates(params, updates), state), None

  hand, state = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), jnp.arange(steps))[0])(
      params, tx.init(params))
  chex.assert_trees_all_equal(result.params, hand)
  assert int(state.n_cloned) == int(result.opt_state.n_cloned) == steps // 10
  assert result.history["loss"].shape == (3, m)
  assert result.best_chain == int(np.argmin(result.history["loss"][-1]))
  with pytest.raises(ValueError, match="couples its chains itself.*no n_chains"):
    amc_jax.fit(tx, params, noisy_loss, steps=100, n_chains=m, random_loss=True, **KW)


def test_random_loss_is_validated():
  with pytest.raises(ValueError, match="takes no data"):
    amc_jax.fit(TX, PARAMS, loss_fn, DATA, steps=100, random_loss=True, **KW)
  with pytest.raises(TypeError, match=r"loss_fn\(params, key\)"):
    amc_jax.fit(TX, PARAMS, lambda p: 0.0, steps=100, random_loss=True, **KW)
  with pytest.raises(TypeError, match="random_loss must be True or False"):
    amc_jax.fit(TX, PARAMS, lambda p, k: 0.0, steps=100, random_loss=1, **KW)
