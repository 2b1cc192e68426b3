"""One contract, checked for every amc_jax transformation (the optax alias_test habit)."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import amc_jax

def _signal_norm_driven_by_a_plain_loss(tx):
  """amc(signal_norm=True) behind the plain-loss contract: the loss returns
  fixed lambdas of 0.5 with every evaluation (real ones are tested in
  test_signal_norm.py); so the caching of the lambdas goes through every check."""

  def lambdas(params):
    return jax.tree_util.tree_map(lambda x: jnp.full_like(x, 0.5), params)

  def update(updates, state, params=None, *, value_fn=None, value=None, **extra):
    if value is not None:
      value = (value, lambdas(params))
    return tx.update(
        updates, state, params, value_fn=lambda p: (value_fn(p), lambdas(p)), value=value,
        **extra,
    )

  return optax.GradientTransformationExtraArgs(tx.init, update)


# A grid of levels for the discrete move that contains the optima of the
# parabola (w = 0.5, b = -1) and of Rosenbrock (1, 1), and their starts.
GRID = tuple(np.arange(-4.0, 4.25, 0.25).tolist())


def one_coordinate():
  """A custom trial move, written as a user would: one entry of the params,
  chosen uniformly, moves by sigma * N(0, 1); symmetric, no state."""

  def propose(key, state, params, sigma, scales):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flat = jnp.concatenate([jnp.ravel(x) for x in leaves])
    pick_key, size_key = jax.random.split(key)
    i = jax.random.randint(pick_key, (), 0, flat.size)
    size = jnp.asarray(sigma).astype(flat.dtype) * jax.random.normal(size_key, (), flat.dtype)
    step = jnp.zeros_like(flat).at[i].set(size)
    pieces = jnp.split(step, np.cumsum([x.size for x in leaves])[:-1])
    moves = [m.reshape(x.shape).astype(x.dtype) for m, x in zip(pieces, leaves)]
    return jax.tree_util.tree_unflatten(treedef, moves), 0.0

  return amc_jax.proposals.Proposal(
      init=lambda params: (), propose=propose, update=lambda s, m, a, r: s
  )


def _labels(params):
  # The parabola's params: w by the Gaussian move, b on the grid; a bare
  # array (Rosenbrock) by the Gaussian move.
  return {"w": "real", "b": "grid"} if isinstance(params, dict) else "real"


TRANSFORMATIONS = {
    "amc": lambda seed=0: amc_jax.amc(0.1, epsilon=0.1, n_reset=20, seed=seed),
    "amc_minibatch": lambda seed=0: amc_jax.amc(
        0.1, epsilon=0.1, n_reset=20, minibatch=True, seed=seed
    ),
    "amc_annealed": lambda seed=0: amc_jax.amc(
        0.1, epsilon=0.05, n_reset=20, seed=seed,
        temperature=optax.exponential_decay(1e-2, 200, 0.1),
    ),
    "amc_signal_norm": lambda seed=0: _signal_norm_driven_by_a_plain_loss(
        amc_jax.amc(0.2, epsilon=0.1, n_reset=20, signal_norm=True, seed=seed)
    ),
    "metropolis": lambda seed=0: amc_jax.metropolis(0.02, seed=seed),
    "amc_injected": lambda seed=0: optax.inject_hyperparams(amc_jax.amc)(
        sigma0=0.1, epsilon=0.1, n_reset=20, seed=seed
    ),
    "amc_chained": lambda seed=0: optax.chain(
        amc_jax.amc(0.1, epsilon=0.1, n_reset=20, seed=seed), optax.scale(1.0)
    ),
    # Every trial move of amc_jax.proposals, and a custom one.
    "amc_proposal_gaussian": lambda seed=0: amc_jax.amc(
        0.1, n_reset=20, proposal=amc_jax.proposals.gaussian(0.1), seed=seed
    ),
    "amc_sparse": lambda seed=0: amc_jax.amc(
        0.1, n_reset=20, proposal=amc_jax.proposals.sparse(0.5, amc_jax.proposals.gaussian(0.1)),
        seed=seed,
    ),
    "amc_layerwise": lambda seed=0: amc_jax.amc(
        0.1, n_reset=20, proposal=amc_jax.proposals.layerwise(amc_jax.proposals.gaussian(0.1)),
        seed=seed,
    ),
    "amc_discrete": lambda seed=0: amc_jax.amc(
        0.1, n_reset=20, proposal=amc_jax.proposals.discrete(GRID, 0.3),
        seed=seed,
    ),
    "metropolis_partition": lambda seed=0: amc_jax.metropolis(
        0.05,
        proposal=amc_jax.proposals.partition(
            {"real": amc_jax.proposals.gaussian(), "grid": amc_jax.proposals.discrete(GRID, 0.5)},
            _labels,
        ),
        seed=seed,
    ),
    "amc_orthogonal": lambda seed=0: amc_jax.amc(
        0.2, n_reset=20,
        proposal=amc_jax.proposals.partition(
            {"rotation": amc_jax.proposals.orthogonal(), "real": amc_jax.proposals.gaussian(0.1)},
            {"R": "rotation", "w": "real", "b": "real"},
        ),
        seed=seed,
    ),
    "amc_custom_proposal": lambda seed=0: amc_jax.amc(
        0.1, n_reset=20, proposal=one_coordinate(), seed=seed
    ),
}
NAMES = list(TRANSFORMATIONS)


def parabola(params):
  return jnp.sum((params["w"] - 0.5) ** 2) + jnp.sum((params["b"] + 1.0) ** 2)


# A rotation by 1 radian in the (0, 1) plane: the target of the rotated matrix.
_Q = np.array([[np.cos(1.0), -np.sin(1.0), 0], [np.sin(1.0), np.cos(1.0), 0], [0, 0, 1]])


def rotated_parabola(params):
  target = jnp.asarray(_Q, jnp.result_type(params["R"]))
  return parabola(params) + jnp.sum((params["R"] - target) ** 2)


def problem(name, dtype=jnp.float32):
  """(params, loss) of the parabola contract; rotations need a matrix to turn."""
  params = {"w": jnp.zeros((3,), dtype), "b": jnp.zeros((2,), dtype)}
  if name == "amc_orthogonal":
    return dict(params, R=jnp.eye(3, dtype=dtype)), rotated_parabola
  return params, parabola


def rosenbrock(params):
  x, y = params[0], params[1]
  return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def run(tx, params, loss, n_steps, gradient=False):
  """n_steps of tx in one jitted lax.scan; returns params, state and losses.

  Monte Carlo transformations get ``value_fn=loss``; with ``gradient=True``
  the transformation gets ``jax.grad(loss)`` as its updates instead.
  """
  state = tx.init(params)

  @jax.jit
  def go(params, state):
    def body(carry, _):
      params, state = carry
      if gradient:
        updates, state = tx.update(jax.grad(loss)(params), state, params)
      else:
        updates, state = tx.update(None, state, params, value_fn=loss)
      params = optax.apply_updates(params, updates)
      return (params, state), loss(params)

    return jax.lax.scan(body, (params, state), None, length=n_steps)

  (params, state), losses = go(params, state)
  return params, state, losses


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola(name):
  params, loss = problem(name)
  _, _, losses = run(TRANSFORMATIONS[name](), params, loss, 1500)
  start = float(loss(params))
  assert start >= 2.75
  assert float(losses[-1]) < 1e-2 * start


# Rotations keep a matrix's singular values, so they cannot descend a
# Rosenbrock valley of two scalars; every other move must.
@pytest.mark.parametrize("name", [n for n in NAMES if n != "amc_orthogonal"])
def test_descends_rosenbrock(name):
  params = jnp.array([-2.0, 2.0])
  _, _, losses = run(TRANSFORMATIONS[name](), params, rosenbrock, 3000)
  # f(-2, 2) = 409; the valley floor near (-1, 1) is at f ~ 4.
  assert float(losses[-1]) < 5.0


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation_on_second_call(name):
  tx = TRANSFORMATIONS[name]()
  params, loss = problem(name)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(None, state, params, value_fn=loss)
    return optax.apply_updates(params, updates), state

  params, state = step(params, state)
  params, state = step(params, state)
  params, state = step(params, state)
  assert step._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_ignores_unknown_extra_args_and_gradients(name):
  tx = TRANSFORMATIONS[name]()
  params, loss = problem(name)
  state = tx.init(params)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  u1, s1 = tx.update(grads, state, params, value_fn=loss, unknown_arg=3)
  u2, s2 = tx.update(None, state, params, value_fn=loss)
  chex.assert_trees_all_equal(u1, u2)
  chex.assert_trees_all_equal(
      jax.tree_util.tree_map(_key_data, s1), jax.tree_util.tree_map(_key_data, s2)
  )


def _key_data(x):
  if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(x)
  return x


def _dtypes(tree):
  return jax.tree_util.tree_map(lambda x: jnp.result_type(x), tree)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_dtypes_and_state_structure_are_preserved(name, dtype, request):
  if dtype == "float64":
    request.getfixturevalue("x64")
  dtype = jnp.dtype(dtype)
  tx = TRANSFORMATIONS[name]()
  params, f32_loss = problem(name, dtype)
  loss = lambda p: f32_loss(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), p))
  state0 = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(None, state, params, value_fn=loss)
    return updates, optax.apply_updates(params, updates), state

  updates, new_params, state = step(params, state0)
  for _ in range(20):
    updates, new_params, state = step(new_params, state)
  assert _dtypes(updates) == _dtypes(params)
  assert _dtypes(new_params) == _dtypes(params)
  assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(state0)
  assert _dtypes(state) == _dtypes(state0)
  chex.assert_trees_all_equal_shapes(state, state0)
  assert float(loss(new_params)) < float(loss(params))


@pytest.mark.parametrize("name", NAMES)
def test_updates_are_exactly_the_evaluated_proposal(name):
  """params + updates is bit-identical to the proposal that value_fn saw.

  The loss hashes the exact bit patterns of the params, so a proposal that
  differs from the applied params in any bit would give a different loss.
  """

  def bit_hash_loss(params):
    bits = [
        jax.lax.bitcast_convert_type(leaf, jnp.uint32).ravel()
        for leaf in jax.tree_util.tree_leaves(params)
    ]
    h = jnp.uint32(2166136261)
    for b in bits:
      for i in range(b.shape[0]):
        h = (h ^ b[i]) * jnp.uint32(16777619)  # FNV-1a over the words
    return (h >> 8).astype(jnp.float32) / 2.0**24  # in [0, 1)

  tx = TRANSFORMATIONS[name]()
  params, _ = problem(name)
  # Away from zero (but on the discrete move's grid), so moves change bits.
  params = jax.tree_util.tree_map(lambda x: x + 0.25, params)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(None, state, params, value_fn=bit_hash_loss)
    new_params = optax.apply_updates(params, updates)
    return new_params, state, bit_hash_loss(new_params)

  n_accepted = 0
  for _ in range(40):
    params, state, recomputed = step(params, state)
    if bool(_amc(state).info.accepted):
      n_accepted += 1
      assert float(recomputed) == float(_amc(state).info.proposed_loss)
    assert float(recomputed) == float(_amc(state).loss)
  assert n_accepted > 0


def _amc(state):
  """The AMCState inside a possibly wrapped (chained, injected) state."""
  found = [
      s for s in jax.tree_util.tree_leaves(
          state, is_leaf=lambda x: isinstance(x, amc_jax.AMCState)
      ) if isinstance(s, amc_jax.AMCState)
  ]
  assert len(found) == 1
  return found[0]


@pytest.mark.parametrize("name", NAMES)
def test_scan_equals_python_loop(name):
  """A lax.scan of steps and a Python loop of jitted steps agree bit for bit."""
  tx = TRANSFORMATIONS[name]()
  params, loss = problem(name)
  scanned, state_scan, _ = run(tx, params, loss, 50)

  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))
  for _ in range(50):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
  chex.assert_trees_all_equal(params, scanned)
  assert int(_amc(state).n_accept) == int(_amc(state_scan).n_accept)


PROPOSAL_NAMES = [n for n in NAMES if n.startswith(("amc_proposal", "amc_sparse", "amc_layerwise",
                                                       "amc_discrete", "metropolis_partition",
                                                       "amc_orthogonal", "amc_custom"))]


@pytest.mark.parametrize("name", PROPOSAL_NAMES)
def test_vmapped_chain_equals_a_single_chain(name):
  """Under vmap (an ensemble) chain k follows the single chain from its key,
  bit for bit: the cond of the accept/reject becomes a select, and every
  move vectorises."""
  tx = TRANSFORMATIONS[name]()
  params, loss = problem(name)
  n_chains, n_steps = 3, 40
  batch = jax.tree_util.tree_map(lambda x: jnp.stack([x] * n_chains), params)
  state = amc_jax.init_ensemble(tx, batch, jax.random.key(5))

  @jax.jit
  def run_all(p, s):
    def body(carry, _):
      p, s = carry
      u, s = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=loss))(p, s)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(body, (p, s), None, length=n_steps)[0]

  final, final_state = run_all(batch, state)
  k = 2
  single = tx.init(params)._replace(key=state.key[k])
  p, s = params, single
  step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))
  for _ in range(n_steps):
    u, s = step(p, s)
    p = optax.apply_updates(p, u)
  chex.assert_trees_all_equal(p, jax.tree_util.tree_map(lambda x: x[k], final))
  assert int(s.n_accept) == int(final_state.n_accept[k]) > 0


@pytest.mark.parametrize("name", PROPOSAL_NAMES)
def test_proposal_under_inject_hyperparams_and_fit(name):
  """A proposal passes through optax.inject_hyperparams (as a static
  argument) and amc_jax.fit unchanged: the same trajectory as the plain
  transformation, bit for bit."""
  plain = TRANSFORMATIONS[name]()
  params, loss = problem(name)
  ref_params, ref_state, _ = run(plain, params, loss, 30)

  proposal = {
      "amc_sparse": lambda: amc_jax.proposals.sparse(0.5, amc_jax.proposals.gaussian(0.1)),
  }.get(name)
  if proposal is not None:
    injected = optax.inject_hyperparams(amc_jax.amc, static_args=("proposal",))(
        sigma0=0.1, n_reset=20, proposal=proposal(), seed=0
    )
    got, _, _ = run(injected, params, loss, 30)
    chex.assert_trees_all_equal(got, ref_params)

  result = amc_jax.fit(plain, params, loss, steps=30, progress=False)
  chex.assert_trees_all_equal(result.params, ref_params)
  assert int(amc_jax.monte_carlo_state(result.opt_state).n_accept) == int(ref_state.n_accept)


class MLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(16)(x))
    return nn.Dense(2)(x)


@pytest.mark.parametrize("name", ["amc", "metropolis"])
def test_trains_flax_params_with_a_non_differentiable_loss(name):
  """Classification error (argmax, integer count) has no useful gradient."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 4)).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
  model = MLP()
  variables = model.init(jax.random.key(0), x)

  def n_errors(variables):
    pred = jnp.argmax(model.apply(variables, x), axis=-1)
    return jnp.sum(pred != y)  # an integer: no gradient at all

  tx = TRANSFORMATIONS[name]()
  start = int(n_errors(variables))
  variables, state, _ = run(tx, variables, n_errors, 600)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
      model.init(jax.random.key(0), x)
  )
  end = int(n_errors(variables))
  assert end < start / 2, (start, end)
  assert float(_amc(state).loss) == end


# The gradient transformations of amc_jax (the noise-free side of the
# correspondence) follow optax's own contract: gradients in, updates out.
GRADIENT_TRANSFORMATIONS = {
    "normalized_sgd": lambda: amc_jax.normalized_sgd(2e-2),
    "normalized_sgd_schedule": lambda: amc_jax.normalized_sgd(optax.exponential_decay(5e-2, 500, 0.1)),
    "normalized_sgd_injected": lambda: optax.inject_hyperparams(amc_jax.normalized_sgd)(learning_rate=2e-2),
    "equivalent_gd_cold": lambda: amc_jax.equivalent_gradient_descent(2e-2 * 2.5066283),
    "equivalent_gd_hot": lambda: amc_jax.equivalent_gradient_descent(0.1, temperature=0.1),
}


@pytest.mark.parametrize("name", list(GRADIENT_TRANSFORMATIONS))
def test_gradient_transformation_contract(name):
  params = {"w": jnp.zeros((3,)), "b": jnp.zeros((2,))}
  tx = GRADIENT_TRANSFORMATIONS[name]()
  final, state, losses = run(tx, params, parabola, 600, gradient=True)
  assert float(losses[-1]) < 1e-2 * 2.75
  # The same steps as a Python loop of jitted steps, bit for bit, one compilation.
  state, p = tx.init(params), params
  step = jax.jit(lambda p, s: tx.update(jax.grad(parabola)(p), s, p))
  for _ in range(600):
    updates, state = step(p, state)
    p = optax.apply_updates(p, updates)
  chex.assert_trees_all_equal(p, final)
  assert step._cache_size() == 1
  # bfloat16 params keep their dtype and the state its structure.
  bf = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
  s0 = tx.init(bf)
  updates, s1 = jax.jit(tx.update)(jax.tree_util.tree_map(jnp.ones_like, bf), s0, bf)
  assert _dtypes(updates) == _dtypes(bf)
  assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s0)
