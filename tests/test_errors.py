"""Bad input fails early and clearly; non-finite losses are never accepted."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax


def quadratic(x):
  return jnp.sum(x**2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma0=0.0), "sigma0 must be a finite number > 0, got 0.0"),
        (dict(sigma0=-1e-3), "sigma0 must be a finite number > 0"),
        (dict(sigma0=math.nan), "sigma0 must be a finite number > 0"),
        (dict(sigma0=math.inf), "sigma0 must be a finite number > 0"),
        (dict(sigma0=0.1, n_reset=0), "n_reset must be an integer >= 1, got 0"),
        (dict(sigma0=0.1, n_reset=2.5), "n_reset must be an integer >= 1, got 2.5"),
        (dict(sigma0=0.1, sigma_decay=0.0), r"sigma_decay must lie in \(0, 1\], got 0.0"),
        (dict(sigma0=0.1, sigma_decay=1.05), r"sigma_decay must lie in \(0, 1\]"),
        (dict(sigma0=0.1, temperature=-0.5), "temperature must be finite and >= 0, got -0.5"),
        (dict(sigma0=0.1, temperature=math.nan), "temperature must be finite and >= 0"),
        (
            dict(sigma0=0.1, temperature=optax.constant_schedule(-1.0)),
            "temperature must be finite and >= 0, the schedule gives",
        ),
        (dict(sigma0=0.1, epsilon=math.nan), "epsilon must be finite"),
        (dict(sigma0=jnp.ones(2)), "sigma0 must be a scalar"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    amc_jax.amc(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma0=0.1, minibatch=1), "minibatch must be a bool"),
        (dict(sigma0=0.1, seed=1.5), "seed must be an int or a jax.random.key"),
        (dict(sigma0=0.1, seed=True), "seed must be an int or a jax.random.key"),
        (dict(sigma0=True), "sigma0 must be a number, got the boolean"),
        (dict(sigma0=0.1, seed=jnp.zeros(3)), "seed must be an int or a jax.random.key"),
    ],
)
def test_bad_argument_types_raise_at_construction(kwargs, match):
  with pytest.raises(TypeError, match=match):
    amc_jax.amc(**kwargs)


def test_metropolis_names_its_own_argument():
  with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
    amc_jax.metropolis(sigma=-1.0)
  with pytest.raises(ValueError, match="temperature"):
    amc_jax.metropolis(sigma=1.0, temperature=-1.0)


@pytest.mark.parametrize("seed", [3, jax.random.key(3), jax.random.PRNGKey(3)])
def test_seed_forms_are_equivalent(seed):
  """An int, a typed key and a legacy raw key give the same chain."""
  tx = amc_jax.amc(0.1, seed=seed)
  ref = amc_jax.amc(0.1, seed=3)
  x = jnp.ones(4)
  u, _ = tx.update(None, tx.init(x), x, value_fn=quadratic)
  u_ref, _ = ref.update(None, ref.init(x), x, value_fn=quadratic)
  np.testing.assert_array_equal(u, u_ref)


def test_missing_value_fn_and_params_raise():
  tx = amc_jax.amc(0.1)
  x = jnp.ones(3)
  state = tx.init(x)
  with pytest.raises(TypeError, match="pass value_fn="):
    tx.update(None, state, x)
  with pytest.raises(TypeError, match="value_fn must be callable"):
    tx.update(None, state, x, value_fn=3.0)
  with pytest.raises(ValueError, match="need the current params"):
    tx.update(None, state, value_fn=quadratic)


@pytest.mark.parametrize("jit", [False, True])
def test_non_scalar_loss_raises(jit):
  tx = amc_jax.amc(0.1)
  x = jnp.ones(3)
  state = tx.init(x)
  update = lambda s, p: tx.update(None, s, p, value_fn=lambda p: p**2)
  if jit:
    update = jax.jit(update)
  with pytest.raises(ValueError, match=r"must be a scalar loss, got an array of shape \(3,\)"):
    update(state, x)


def test_complex_loss_raises():
  tx = amc_jax.amc(0.1)
  x = jnp.ones(3)
  with pytest.raises(TypeError, match="must be a real number"):
    tx.update(None, tx.init(x), x, value_fn=lambda p: jnp.sum(p).astype(jnp.complex64))


def test_non_float_params_raise_at_init():
  tx = amc_jax.amc(0.1)
  with pytest.raises(TypeError, match=r"leaf \['n'\] has dtype int32"):
    tx.init({"w": jnp.ones(2), "n": jnp.ones(2, jnp.int32)})
  with pytest.raises(ValueError, match="empty pytree"):
    tx.init({})


def test_params_that_do_not_match_the_state_raise():
  # The centres mu are what ties a state to its params; epsilon = 0 keeps none.
  tx = amc_jax.amc(0.1, epsilon=0.1)
  state = tx.init({"w": jnp.ones(2)})
  with pytest.raises(ValueError, match="structure of the params given to init"):
    tx.update(None, state, {"v": jnp.ones(2)}, value_fn=lambda p: jnp.sum(p["v"]))
  with pytest.raises(ValueError, match=r"params leaf \['w'\] is bfloat16\[2\]"):
    tx.update(
        None, state, {"w": jnp.ones(2, jnp.bfloat16)},
        value_fn=lambda p: jnp.sum(p["w"]).astype(jnp.float32),
    )


def test_scales_that_do_not_match_params_raise():
  tx = amc_jax.amc(0.1)
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  state = tx.init(params)
  loss = lambda p: jnp.sum(p["w"]) + jnp.sum(p["b"])
  with pytest.raises(ValueError, match="same pytree structure as params"):
    tx.update(None, state, params, value_fn=loss, scales={"w": jnp.ones((2, 3))})
  with pytest.raises(ValueError, match=r"scales leaf \['w'\] has shape \(3, 2\)"):
    tx.update(
        None, state, params, value_fn=loss,
        scales={"w": jnp.ones((3, 2)), "b": jnp.ones(3)},
    )
  # Broadcastable scales (one per layer, one per output neuron) are fine.
  tx.update(None, state, params, value_fn=loss, scales={"w": jnp.ones(3), "b": 1.0})


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_finite_proposals_are_never_accepted(bad, temperature):
  """Half of the space has a non-finite loss (a *lower* one in the -inf case).

  The finite part slopes down towards that half, so the chain presses against
  the boundary and keeps proposing moves across it.
  """

  def loss(x):
    return jnp.where(jnp.sum(x) > 0.0, bad, jnp.sum((x - 1.0) ** 2))

  tx = amc_jax.amc(0.5, epsilon=0.1, n_reset=5, temperature=temperature)
  x = jnp.full(4, -0.5)
  state = tx.init(x)

  @jax.jit
  def run(x, state):
    def body(carry, _):
      x, state = carry
      updates, state = tx.update(None, state, x, value_fn=loss)
      x = optax.apply_updates(x, updates)
      return (x, state), (jnp.sum(x), state.loss, state.info.proposed_loss)

    return jax.lax.scan(body, (x, state), None, length=300)

  (x, state), (sums, losses, proposed) = run(x, state)
  assert bool(jnp.all(sums <= 0.0))
  assert bool(jnp.all(jnp.isfinite(losses)))
  assert int(jnp.sum(~jnp.isfinite(proposed))) > 10  # the guard was exercised
  assert int(state.n_accept) > 0  # and the chain did move


def test_infinite_scales_are_rejected_even_when_the_loss_ignores_them():
  tx = amc_jax.amc(0.1)
  params = {"used": jnp.ones(2), "ignored": jnp.ones(2)}
  state = tx.init(params)
  loss = lambda p: -jnp.sum(p["used"])  # ignores "ignored"
  scales = {"used": jnp.ones(2), "ignored": jnp.array([1.0, jnp.inf])}
  for _ in range(20):
    updates, state = tx.update(None, state, params, value_fn=loss, scales=scales)
    params = optax.apply_updates(params, updates)
  assert int(state.n_accept) == 0
  assert bool(jnp.all(jnp.isfinite(params["ignored"])))


def test_nan_current_loss_raises_eagerly():
  tx = amc_jax.amc(0.1)
  x = jnp.ones(3)
  loss = lambda p: jnp.where(jnp.all(p == 1.0), jnp.nan, jnp.sum(p))
  with pytest.raises(FloatingPointError, match="loss of the current params is nan"):
    tx.update(None, tx.init(x), x, value_fn=loss)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mode", ["batch", "minibatch", "value"])
def test_nan_current_loss_raises_under_jit(mode):
  tx = amc_jax.amc(0.1, minibatch=(mode == "minibatch"))
  x = jnp.ones(3)
  loss = lambda p: jnp.where(jnp.all(p == 1.0), jnp.nan, jnp.sum(p))
  kwargs = dict(value=jnp.float32(jnp.nan)) if mode == "value" else {}
  step = jax.jit(lambda s, p: tx.update(None, s, p, value_fn=loss, **kwargs))
  with pytest.raises(Exception, match="loss of the current params is nan"):
    updates, state = step(tx.init(x), x)
    jax.block_until_ready((updates, state))
    jax.effects_barrier()


def test_finite_current_loss_does_not_call_the_host():
  """The NaN guard's callback sits in a loop that does not run on good steps."""
  calls = []
  tx = amc_jax.amc(0.1, minibatch=True)
  x = jnp.ones(3)

  def loss(p):
    jax.debug.callback(lambda v: calls.append(1), p[0])
    return jnp.sum(p**2)

  step = jax.jit(lambda s, p: tx.update(None, s, p, value_fn=loss))
  state = tx.init(x)
  for _ in range(5):
    _, state = step(state, x)
  jax.effects_barrier()
  assert len(calls) == 10  # two loss evaluations a step, nothing else calls back


def test_infinite_current_loss_accepts_any_finite_proposal():
  tx = amc_jax.amc(0.1, minibatch=True)
  x = jnp.full(3, 2.0)
  loss = lambda p: jnp.where(jnp.all(p == 2.0), jnp.inf, jnp.sum(p**2))
  updates, state = tx.update(None, tx.init(x), x, value_fn=loss)
  assert bool(state.info.accepted)
  assert bool(jnp.isfinite(state.loss))


def test_nan_current_loss_under_jit_prints_its_message_once(tmp_path):
  """What a user sees from an uncaught NaN error in a jitted step: the message once.

  jax's pure_callback also logs a callback's exception before re-raising it in
  a JaxRuntimeError; the library drops that log record for its own error.
  """
  import subprocess
  import sys

  script = tmp_path / "nan_step.py"
  script.write_text(
      "import jax, jax.numpy as jnp, optax, amc_jax\n"
      "amc_jax.use_xla_cpu_workaround()\n"
      "tx = amc_jax.amc(0.1, seed=0)\n"
      "x = jnp.ones(3)\n"
      "loss = lambda p: jnp.where(jnp.all(p == 1.0), jnp.nan, jnp.sum(p))\n"
      "step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))\n"
      "jax.block_until_ready(step(x, tx.init(x)))\n"
  )
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  output = proc.stdout + proc.stderr
  assert output.count("the loss of the current params is nan") == 1, output[-4000:]
  assert "jax.pure_callback failed" not in output


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_nan_current_loss_under_jit_names_the_step_and_the_chain():
  """A current loss (value=) that turns NaN once the state has taken 37
  steps, inside a jitted scan: the error says step 37; for a vmapped
  ensemble whose chains 1 and 3 go bad at step 5, it names both."""
  tx = amc_jax.amc(0.1, minibatch=True, seed=0)
  params = jnp.ones(3)
  square = lambda q: jnp.sum(q**2)

  @jax.jit
  def run(p, s):
    def body(carry, _):
      p, s = carry
      current = jnp.where(s.count >= 37, jnp.nan, square(p))
      u, s = tx.update(None, s, p, value_fn=square, value=current)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (p, s), None, length=50)[0]

  with pytest.raises(Exception, match=r"nan \(or -inf\) at step 37 \(the state's count"):
    jax.block_until_ready(run(params, tx.init(params)))
    jax.effects_barrier()

  @jax.jit
  def run_many(p, s):
    def one(p, s, i):
      bad = (s.count >= 5) & ((i == 1) | (i == 3))
      return tx.update(None, s, p, value_fn=square, value=jnp.where(bad, jnp.nan, square(p)))

    def body(carry, _):
      p, s = carry
      u, s = jax.vmap(one)(p, s, jnp.arange(4))
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (p, s), None, length=10)[0]

  chains = amc_jax.init_ensemble(tx, jnp.ones((4, 3)), jax.random.key(0))
  with pytest.raises(Exception, match=r"chain 1 at step 5, chain 3 at step 5"):
    jax.block_until_ready(run_many(jnp.ones((4, 3)), chains))
    jax.effects_barrier()
