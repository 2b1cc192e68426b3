"""Trial moves: :class:`Proposal` and the moves of amc_jax.

A move knows nothing of losses or acceptance. It draws an additive change of
the params (a pytree like them) and says how asymmetric it is; the kernel of
:mod:`amc_jax._src.amc` evaluates the loss at ``params + move`` and decides.
Precedents: blackjax ``mcmc/random_walk.py`` (a ``propose(key, x)`` per move)
and optax ``partition`` (per-part choices).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax

from amc_jax._src import base
from amc_jax._src import trees

PyTree = Any


class Proposal(NamedTuple):
  """A trial move of the params: three pure functions, like an optax transformation.

  Attributes:
    init: ``init(params) -> proposal_state``, the move's own state (aMC's
      proposal centres ``mu`` for :func:`gaussian`; ``()`` for a move that
      keeps none). It lives in ``AMCState.mu``.
    propose: ``propose(key, proposal_state, params, sigma, scales) -> (move,
      log_ratio)``. ``move`` is a pytree with the structure, shapes and dtypes
      of ``params``; the trial point is ``params + move`` (rounded like
      ``optax.apply_updates``). ``log_ratio`` is
      :math:`\\log q(x \\mid x') - \\log q(x' \\mid x)`, a scalar, 0 for a
      symmetric move, so that the finite-temperature test
      :math:`\\min(1, e^{-\\Delta U/T + \\text{log\\_ratio}})` is exact
      Metropolis-Hastings. ``sigma`` is the kernel's current step size (a
      scalar that aMC shrinks); ``scales`` is ``None`` or a pytree like params
      of per-entry multipliers :math:`\\lambda_i` (signal norm), which a move
      may use or ignore.
    update: ``update(proposal_state, move, accepted, reset) ->
      proposal_state``, called after every step with the move that was tried,
      whether it was accepted (bool scalar) and whether aMC's reset fired
      (``n_reset`` consecutive rejections; bool scalar; never with an
      accepted move). Both flags are traced arrays: select with
      ``jnp.where``, not Python ``if``. It runs outside the accept/reject
      ``lax.cond`` so that a params-sized state is updated in place.

  Examples:
    A symmetric, stateless move of every entry by +-sigma:

    >>> import jax, jax.numpy as jnp, amc_jax
    >>> def propose(key, state, params, sigma, scales):
    ...   signs = jax.random.rademacher(key, params.shape, params.dtype)
    ...   return sigma * signs, 0.0                     # symmetric: log_ratio = 0
    >>> move = amc_jax.proposals.Proposal(
    ...     init=lambda params: (), propose=propose,
    ...     update=lambda state, move, accepted, reset: state)
    >>> tx = amc_jax.amc(sigma0=0.25, proposal=move, seed=0)
    >>> result = amc_jax.fit(tx, jnp.zeros(2), lambda x: jnp.sum((x - 1.0) ** 2),
    ...                      steps=200, progress=False)
    >>> bool(result.history["loss"][-1] < 0.2)         # from 2.0
    True
  """

  init: Callable[[PyTree], PyTree]
  propose: Callable[..., tuple[PyTree, Any]]
  update: Callable[[PyTree, PyTree, jax.Array, jax.Array], PyTree]


def check_params(params: PyTree) -> None:
  """Raises if ``params`` is empty or holds a leaf that is not floating point."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    raise ValueError("params must contain at least one array; got an empty pytree.")
  for path, leaf in leaves:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          "amc_jax moves floating-point parameters only; the leaf"
          f" {trees.leaf_name(path)} has dtype {dtype}. Keep integer or boolean"
          " state out of the params pytree."
      )


def _first_mismatch(reference: PyTree, tree: PyTree):
  """None if ``tree`` has the structure, shapes and dtypes of ``reference``;
  else ("structure", None, None) or ("leaf", path, (reference leaf, leaf))."""
  if jax.tree_util.tree_structure(reference) != jax.tree_util.tree_structure(tree):
    return "structure", None, None
  for (path, r), t in zip(
      jax.tree_util.tree_leaves_with_path(reference), jax.tree_util.tree_leaves(tree)
  ):
    if jnp.shape(r) != jnp.shape(t) or jnp.result_type(r) != jnp.result_type(t):
      return "leaf", path, (r, t)
  return None


def _describe(x) -> str:
  return f"{jnp.result_type(x)}{list(jnp.shape(x))}"


def _check_match(reference: PyTree, tree: PyTree, structure: Callable[[], str],
                 leaf: Callable[[str, str, str], str]) -> None:
  """Raises ``ValueError(structure())`` if ``tree``'s structure differs from
  ``reference``'s, ``ValueError(leaf(name, expected, got))`` for the first
  leaf of another shape or dtype."""
  found = _first_mismatch(reference, tree)
  if found is None:
    return
  kind, path, pair = found
  if kind == "structure":
    raise ValueError(structure())
  raise ValueError(leaf(trees.leaf_name(path), _describe(pair[0]), _describe(pair[1])))


def check_like(reference: PyTree, params: PyTree) -> None:
  """Raises unless ``params`` has the structure, shapes and dtypes of ``reference``."""
  _check_match(
      reference, params,
      lambda: ("params passed to update must have the structure of the params given to"
               f" init; got {jax.tree_util.tree_structure(params)}, expected"
               f" {jax.tree_util.tree_structure(reference)}."),
      lambda name, expected, got: (f"params leaf {name} is {got} but the state was"
                                   f" initialised for {expected}."),
  )


def check_move(move: PyTree, params: PyTree) -> None:
  """Raises unless a proposal's ``move`` is shaped and typed like ``params``."""
  _check_match(
      params, move,
      lambda: ("proposal.propose must return a move with the pytree structure of the"
               f" params; got {jax.tree_util.tree_structure(move)}, params are"
               f" {jax.tree_util.tree_structure(params)}."),
      lambda name, expected, got: (
          f"proposal.propose returned the move leaf {name} as {got}; the params leaf is"
          f" {expected} (a move must match it exactly, so that params + move rounds like"
          " optax.apply_updates)."),
  )


def noise_dtype(params: PyTree) -> jnp.dtype:
  """The dtype of the random numbers drawn for ``params``.

  The widest floating dtype among the leaves, and at least float32, so that
  bfloat16 params receive float32 normals rounded once to bfloat16.
  """
  widest = jnp.dtype(jnp.float32)
  for leaf in jax.tree_util.tree_leaves(params):
    dtype = jnp.dtype(jnp.result_type(leaf))
    if dtype.itemsize > widest.itemsize:
      widest = dtype
  return widest


def _sizes(leaves) -> list[int]:
  return [int(np.prod(jnp.shape(x), dtype=np.int64)) for x in leaves]


def _cut(flat: jax.Array, params: PyTree, cast: bool) -> PyTree:
  """Cuts one flat draw into the leaves of ``params`` in ``tree_leaves`` order."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  out, offset = [], 0
  for leaf, size in zip(leaves, _sizes(leaves)):
    piece = flat[offset : offset + size].reshape(jnp.shape(leaf))
    out.append(piece.astype(jnp.result_type(leaf)) if cast else piece)
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out)


def _total_size(params: PyTree) -> int:
  return sum(_sizes(jax.tree_util.tree_leaves(params)))


def standard_normal_like(key: jax.Array, params: PyTree) -> PyTree:
  """Standard normals with the structure, shapes and dtypes of ``params``.

  One flat draw of ``N = sum(leaf.size)`` numbers (in :func:`noise_dtype`),
  cut into the leaves in ``jax.tree_util.tree_leaves`` order. A single draw is
  cheaper than one per leaf, and it makes the random stream easy to replay:
  the normals of a step are ``jax.random.normal(key, (N,), noise_dtype)``.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    >>> z = amc_jax.standard_normal_like(jax.random.key(0), params)
    >>> z["a"].shape, z["b"].shape
    ((2, 3), (4,))
    >>> flat = jax.random.normal(jax.random.key(0), (10,))   # one draw, cut into the leaves
    >>> bool(jnp.all(z["a"].ravel() == flat[:6]) and jnp.all(z["b"] == flat[6:]))
    True
  """
  dtype = noise_dtype(params)
  if _leafwise_ok(key, params, dtype):
    return _leafwise_normals(key, params)
  z = jax.random.normal(key, (_total_size(params),), dtype)
  return _cut(z, params, cast=True)


def _leafwise_ok(key: jax.Array, params: PyTree, dtype) -> bool:
  """Whether :func:`_leafwise_normals` reproduces the flat draw bit for bit:
  float32 normals from a threefry key with JAX's (default) partitionable
  threefry, where the bits of element i depend only on the key and i."""
  return (
      jnp.dtype(dtype) == jnp.float32
      and jax.config.jax_threefry_partitionable
      and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
      and str(jax.random.key_impl(key)) == "threefry2x32"
      and _total_size(params) < 2**32
      and _leafwise_matches_this_jax()
  )


@functools.cache
def _leafwise_matches_this_jax() -> bool:
  """Checks once per process, on a small draw, that :func:`_leafwise_normals`
  is ``jax.random.normal`` bit for bit on this JAX version (else the flat
  draw is used)."""
  with jax.ensure_compile_time_eval():
    key = jax.random.key(20221)
    shapes = {"a": jnp.zeros((3, 5)), "b": jnp.zeros((7,)), "c": jnp.zeros((129,))}
    flat = jax.random.normal(key, (151,), jnp.float32)
    leafwise = _leafwise_normals(key, shapes)
    ours = jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(leafwise)])
    return bool(jnp.all(jax.lax.bitcast_convert_type(flat, jnp.uint32)
                        == jax.lax.bitcast_convert_type(ours, jnp.uint32)))


# Leaves larger than this draw their normals in blocks of this size.
_BLOCK = 1 << 18

_NEXT_ABOVE_MINUS_ONE = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)


def _runs(sizes: list[int]) -> list[list[int]]:
  """Leaf indices grouped for :func:`_leafwise_normals`: a leaf larger than
  ``_BLOCK`` alone; consecutive smaller leaves together, up to ``_BLOCK``
  numbers a group (one threefry call each: a small net's step drew one per
  leaf)."""
  runs, current, filled = [], [], 0
  for i, size in enumerate(sizes):
    if size > _BLOCK or filled + size > _BLOCK:
      if current:
        runs.append(current)
      current, filled = [], 0
    if size > _BLOCK:
      runs.append([i])
    else:
      current.append(i)
      filled += size
  if current:
    runs.append(current)
  return runs


def _leafwise_normals(key: jax.Array, params: PyTree) -> PyTree:
  """``jax.random.normal(key, (N,), float32)`` cut into the leaves, computed leaf
  by leaf from the counters of each leaf's slice: the same numbers, bit for
  bit (``tests/test_proposals.py`` checks), but no N-sized draw is ever held:
  each leaf's random bits live only while its own move is computed, a leaf
  larger than ``_BLOCK`` (2^18) numbers draws them a block at a time, and
  consecutive smaller leaves share one draw (:func:`_runs`).
  (On XLA:CPU that took a step of a 2.9M-param MLP from fwd + 2.72 P to fwd
  + 2.00 P, and from 27.7 to 26.4 ms; blocks of 2^16 cost 31 ms.)

  The steps are those of ``jax.random.normal``: threefry 2x32 of the
  counters ``(0, i)`` (partitionable threefry), the two words xor-ed; the top
  23 bits as the mantissa of a float in [1, 2); a uniform in
  ``[nextafter(-1, 0), 1)``; ``sqrt(2) * erfinv(u)``.
  """
  data = jax.random.key_data(key)
  k1, k2 = data[0], data[1]
  one_bits = jnp.uint32(np.float32(1.0).view(np.uint32))
  lo = jnp.float32(_NEXT_ABOVE_MINUS_ONE)

  def normals(start, count):
    """The normals of counters ``start, ..., start + count - 1``."""
    counts = jax.lax.iota(jnp.uint32, count) + start
    bits1, bits2 = jax.extend.random.threefry2x32_p.bind(
        k1, k2, jnp.zeros((count,), jnp.uint32), counts
    )
    mantissa = jax.lax.shift_right_logical(bits1 ^ bits2, jnp.uint32(32 - 23)) | one_bits
    floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - jnp.float32(1.0)
    u = jax.lax.max(lo, floats * (jnp.float32(1.0) - lo) + lo)
    return jnp.float32(np.sqrt(2)) * jax.lax.erf_inv(u)

  def blocked(offset, size):
    """A large leaf's normals, ``_BLOCK`` at a time into one buffer: JAX's
    CPU lowering of threefry is a rolled loop whose two word-arrays (and
    their copies) are as large as the draw, so one draw of a whole leaf held
    several leaf-sized temporaries."""
    full, tail = divmod(size, _BLOCK)

    def body(j, z):
      start = jnp.uint32(offset) + jnp.uint32(_BLOCK) * j.astype(jnp.uint32)
      return jax.lax.dynamic_update_slice(z, normals(start, _BLOCK), (j * _BLOCK,))

    z = jax.lax.fori_loop(0, full, body, jnp.zeros((size,), jnp.float32))
    if tail:
      z = z.at[full * _BLOCK:].set(normals(jnp.uint32(offset + full * _BLOCK), tail))
    return z

  leaves, treedef = jax.tree_util.tree_flatten(params)
  sizes = _sizes(leaves)
  out, offset = [], 0
  for run in _runs(sizes):
    if len(run) == 1 and sizes[run[0]] > _BLOCK:
      pieces = [blocked(offset, sizes[run[0]])]
    else:  # consecutive small leaves: one draw, cut
      total = sum(sizes[i] for i in run)
      z = normals(jnp.uint32(offset), total)
      starts = np.cumsum([0] + [sizes[i] for i in run])
      pieces = [z[a:b] for a, b in zip(starts[:-1], starts[1:])]
    for i, z in zip(run, pieces):
      out.append(z.reshape(jnp.shape(leaves[i])).astype(jnp.result_type(leaves[i])))
      offset += sizes[i]
  # Each leaf's normals in a buffer of their own, as the flat draw's are:
  # fused into their consumers, XLA rounded erfinv's polynomial differently
  # in different programs (a vmapped chain then missed the single chain by
  # an ulp). The flag is a runtime value that is never true in practice.
  out = base.materialised(out, (k1 == k2) & (k1 == 0))
  return jax.tree_util.tree_unflatten(treedef, out)


def gaussian_move(
    key: jax.Array,
    mu: PyTree,
    sigma: jax.Array,
    scales: Optional[PyTree] = None,
) -> PyTree:
  r"""Draws the move of Eq. (9): :math:`\epsilon_i \sim N(\mu_i, (\lambda_i\sigma)^2)`.

  Computed leaf by leaf in the leaf's dtype as
  ``eps = mu + (sigma * lambda) * z`` (``eps = mu + sigma * z`` without
  scales), with ``z`` from :func:`standard_normal_like`.

  Args:
    key: PRNG key for this move.
    mu: pytree of proposal centres, shaped and typed like the params.
    sigma: scalar step size.
    scales: optional pytree like ``mu`` of multipliers ``lambda_i``.

  Returns:
    The move ``eps``, a pytree like ``mu``.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> mu = {"w": jnp.full(3, 0.5)}
    >>> eps = amc_jax.gaussian_move(jax.random.key(0), mu, 0.1)
    >>> z = amc_jax.standard_normal_like(jax.random.key(0), mu)
    >>> bool(jnp.allclose(eps["w"], 0.5 + 0.1 * z["w"]))
    True
  """
  return _move(key, mu, mu, sigma, scales)


def _move(key: jax.Array, mu: Optional[PyTree], like: PyTree, sigma: jax.Array,
          scales: Optional[PyTree]) -> PyTree:
  """``mu + (sigma * lambda) * z`` leaf by leaf, or ``(sigma * lambda) * z``
  for ``mu=None`` (centres known to be zero: nothing is added, and no
  params-sized array of zeros is kept). ``like`` gives the structure."""
  z = standard_normal_like(key, like)
  sigma = jnp.asarray(sigma)
  lams = [None] * len(jax.tree_util.tree_leaves(like)) if scales is None else (
      jax.tree_util.tree_leaves(scales))
  centres = [None] * len(lams) if mu is None else jax.tree_util.tree_leaves(mu)

  def leaf_move(zi, m, lam):
    dtype = jnp.result_type(zi)
    step = sigma.astype(dtype)
    if lam is not None:
      step = step * jnp.broadcast_to(jnp.asarray(lam).astype(dtype), jnp.shape(zi))
    return step * zi if m is None else m + step * zi

  leaves, treedef = jax.tree_util.tree_flatten(z)
  return jax.tree_util.tree_unflatten(
      treedef, [leaf_move(zi, m, lam) for zi, m, lam in zip(leaves, centres, lams)]
  )


# ---------------------------------------------------------------------------
# The moves.


def gaussian(epsilon: base.Scalar = 0.0) -> Proposal:
  r"""The Gaussian move of aMC, Eqs. (9)-(10) of Whitelam et al. (2022).

  .. math::
    \epsilon_i \sim \mathcal{N}(\mu_i, (\lambda_i\sigma)^2), \qquad
    \mu_i \to \mu_i + \epsilon\,(\epsilon_i - \mu_i) \text{ on acceptance},
    \qquad \mu_i \to 0 \text{ at a reset}.

  The proposal state is :math:`\mu` (zeros at init), a pytree like the params.
  Signal-norm ``scales`` :math:`\lambda_i` multiply sigma. With
  ``epsilon = 0`` (a number) the centres stay at zero, so the move keeps no
  state at all (``init`` returns ``()``: no params-sized array of zeros in
  memory, none added to the move; an array epsilon, as
  ``optax.inject_hyperparams`` passes it, keeps zero centres it may later
  adapt), and the move is symmetric, so finite-temperature
  Metropolis is exact; with ``epsilon != 0``, as in the
  paper, the test ignores the asymmetry that :math:`\mu` introduces
  (``log_ratio = 0``): aMC is an optimiser, not a sampler.

  Args:
    epsilon: rate at which the centres follow accepted moves (Eq. 10). 0
      switches the adaptation off (and out of the compiled step).

  Returns:
    A :class:`Proposal`. ``amc(sigma0, epsilon=e)`` is
    ``amc(sigma0, proposal=gaussian(e))``, bit for bit.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> from amc_jax import proposals
    >>> move = proposals.gaussian(epsilon=0.1)
    >>> params = {"w": jnp.zeros(3)}
    >>> mu = move.init(params)
    >>> eps, log_ratio = move.propose(jax.random.key(0), mu, params, 0.1, None)
    >>> mu = move.update(mu, eps, jnp.array(True), jnp.array(False))
    >>> bool(jnp.allclose(mu["w"], 0.1 * eps["w"])), log_ratio
    (True, 0.0)
  """
  base.check_finite("epsilon", epsilon)
  adapt = not base.is_static_zero(epsilon)
  # A plain number 0 keeps no centres at all. An array epsilon (e.g. from
  # optax.inject_hyperparams, which may change it later) keeps them.
  no_centres = (
      isinstance(epsilon, numbers.Real) and not isinstance(epsilon, (bool, np.bool_))
      and float(epsilon) == 0.0
  )

  def init(params):
    if no_centres:
      return ()  # the centres are identically zero
    return jax.tree_util.tree_map(jnp.zeros_like, params)

  def propose(key, mu, params, sigma, scales):
    if no_centres:
      return _move(key, None, params, sigma, scales), 0.0
    check_like(mu, params)
    return gaussian_move(key, mu, sigma, scales), 0.0

  def update(mu, move, accepted, reset):
    if not adapt:
      return mu  # zeros, or () without centres

    def new_mu(m, e):
      rate = jnp.asarray(epsilon).astype(m.dtype)
      moved = m + rate * (e - m)
      return jnp.where(accepted, moved, jnp.where(reset, jnp.zeros_like(m), m))

    return jax.tree_util.tree_map(new_mu, mu, move)

  return Proposal(init, propose, update)


def _check_fraction(fraction: Any) -> None:
  base.check_unit_interval("fraction", fraction)


def _subset_mask(key: jax.Array, params: PyTree, fraction: base.Scalar) -> PyTree:
  """Booleans like ``params``: each entry True with probability ``fraction``,
  and at least one True.

  With ``u`` uniform per entry, the mask is ``(u < fraction) | (u == min u)``:
  the smallest ``u`` is selected anyway whenever any entry is, and when none
  is, it picks one entry uniformly. The mask does not depend on the params,
  so a move built on it is as symmetric as the move it masks.
  """
  n = _total_size(params)
  u = jax.random.uniform(key, (n,), jnp.float32)
  mask = (u < jnp.asarray(fraction, jnp.float32)) | (u == jnp.min(u))
  return _cut(mask, params, cast=False)


def as_proposal(p: Any, name: str) -> Proposal:
  if isinstance(p, Proposal):
    return p
  if all(callable(getattr(p, f, None)) for f in ("init", "propose", "update")):
    return Proposal(p.init, p.propose, p.update)
  raise TypeError(
      f"{name} must be an amc_jax.proposals.Proposal (init, propose, update);"
      f" got {type(p).__name__}."
  )


def sparse(fraction: base.Scalar, base: Optional[Proposal] = None) -> Proposal:
  r"""Moves a random subset of the parameters; the rest stay exactly put.

  Each entry of the params joins the move independently with probability
  ``fraction``; if none does, one entry chosen uniformly moves, so every step
  moves at least one. The selected entries move by the ``base`` move, the
  others by exactly 0 (the expected number moved is
  :math:`fN + (1-f)^N`). The subset is drawn independently of the params, so
  the move is symmetric when ``base`` is (``log_ratio`` is the base's).

  The base's state (``mu`` for :func:`gaussian`) is updated with the move that
  was tried, zeros outside the subset: on acceptance Eq. (10) pulls the
  centres of the entries that did not move towards 0.

  Args:
    fraction: probability in (0, 1] that an entry moves.
    base: the move of the selected entries; :func:`gaussian` by default.

  Returns:
    A :class:`Proposal`.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> from amc_jax import proposals
    >>> move = proposals.sparse(0.1)
    >>> params = jnp.zeros(1000)
    >>> eps, _ = move.propose(jax.random.key(0), move.init(params), params, 0.1, None)
    >>> 50 < int(jnp.sum(eps != 0)) < 150
    True
  """
  _check_fraction(fraction)
  inner = gaussian() if base is None else as_proposal(base, "base")

  def propose(key, state, params, sigma, scales):
    move_key, mask_key = jax.random.split(key)
    move, log_ratio = inner.propose(move_key, state, params, sigma, scales)
    mask = _subset_mask(mask_key, params, fraction)
    move = jax.tree_util.tree_map(
        lambda m, k: jnp.where(k, m, jnp.zeros_like(m)), move, mask
    )
    return move, log_ratio

  return Proposal(inner.init, propose, inner.update)


def layerwise(base: Optional[Proposal] = None) -> Proposal:
  r"""Moves one leaf of the params per step, chosen uniformly.

  With :math:`L` leaves (for a flax model: each layer's kernel and bias), a
  step draws :math:`\ell` uniform in :math:`\{0, \dots, L-1\}` and moves leaf
  :math:`\ell` by the ``base`` move; every other leaf stays exactly put. The
  choice does not depend on the params, so the move is symmetric when ``base``
  is. The base's state is updated with the tried move (zeros outside leaf
  :math:`\ell`), as in :func:`sparse`.

  Args:
    base: the move of the chosen leaf; :func:`gaussian` by default.

  Returns:
    A :class:`Proposal`.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> from amc_jax import proposals
    >>> move = proposals.layerwise()
    >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    >>> eps, _ = move.propose(jax.random.key(0), move.init(params), params, 0.1, None)
    >>> [k for k, v in eps.items() if bool(jnp.any(v != 0))]  # one leaf moved
    ['a']
  """
  inner = gaussian() if base is None else as_proposal(base, "base")

  def propose(key, state, params, sigma, scales):
    move_key, leaf_key = jax.random.split(key)
    move, log_ratio = inner.propose(move_key, state, params, sigma, scales)
    leaves, treedef = jax.tree_util.tree_flatten(move)
    chosen = jax.random.randint(leaf_key, (), 0, len(leaves))
    leaves = [
        jnp.where(chosen == i, m, jnp.zeros_like(m)) for i, m in enumerate(leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves), log_ratio

  return Proposal(inner.init, propose, inner.update)


def _no_state(params):
  del params
  return ()


def _keep_state(state, move, accepted, reset):
  del move, accepted, reset
  return state


def orthogonal() -> Proposal:
  r"""Rotates matrices: :math:`W \to W R`, which keeps their singular values.

  For every 2-D leaf :math:`W` (a recurrent matrix, say, ``n x m``) a step
  draws :math:`A`, skew-symmetric ``m x m`` with standard normal entries above
  the diagonal, and the Cayley rotation

  .. math::
    R = (I - \tfrac{\sigma}{2} A)^{-1} (I + \tfrac{\sigma}{2} A)
      = I + \sigma A + O(\sigma^2),

  so the move is :math:`W (R - I) = W (I - \tfrac{\sigma}{2}A)^{-1}\sigma A`.
  :math:`R` is orthogonal, so the singular values (and the left singular
  vectors) of :math:`W` are preserved: an RNN's recurrent spectrum neither
  explodes nor vanishes under these moves. :math:`A` and :math:`-A` are
  equally likely and give :math:`R` and :math:`R^{-1}`, so the move is
  symmetric (``log_ratio = 0``). ``sigma`` is the rotation's size (aMC shrinks
  it as usual); signal-norm ``scales`` are not used, since a rotation has one
  size per matrix. Every leaf it is given must be 2-D: combine it with other
  moves through :func:`partition`. A rotation cannot grow a matrix from zero,
  so start the rotated matrices from a non-degenerate (e.g. orthogonal) init.

  Returns:
    A :class:`Proposal` with no state.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> from amc_jax import proposals
    >>> w = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (4, 4)))[0]
    >>> move = proposals.orthogonal()
    >>> eps, _ = move.propose(jax.random.key(1), move.init(w), w, 0.1, None)
    >>> s0, s1 = jnp.linalg.svd(w)[1], jnp.linalg.svd(w + eps)[1]
    >>> bool(jnp.allclose(s0, s1, atol=1e-5)), bool(jnp.any(eps != 0))
    (True, True)
  """

  def init(params):
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
      if jnp.ndim(leaf) != 2:
        raise ValueError(
            "proposals.orthogonal rotates matrices; the params leaf"
            f" {trees.leaf_name(path)} has shape {list(jnp.shape(leaf))}. Give the"
            " other leaves another move with proposals.partition."
        )
    return ()

  def propose(key, state, params, sigma, scales):
    del state, scales
    leaves, treedef = jax.tree_util.tree_flatten(params)
    init(params)
    keys = jax.random.split(key, len(leaves))
    moves = []
    for k, w in zip(keys, leaves):
      dtype = noise_dtype(w)
      m = jnp.shape(w)[1]
      g = jax.random.normal(k, (m, m), dtype)
      upper = jnp.triu(g, 1)
      a = upper - upper.T
      half = (jnp.asarray(sigma).astype(dtype) / 2) * a
      eye = jnp.eye(m, dtype=dtype)
      # R - I = (I - s A/2)^-1 (I + s A/2) - I = (I - s A/2)^-1 (s A).
      r_minus_i = jnp.linalg.solve(eye - half, 2 * half)
      move = jnp.matmul(
          w.astype(dtype), r_minus_i, precision=jax.lax.Precision.HIGHEST
      )
      moves.append(move.astype(jnp.result_type(w)))
    return jax.tree_util.tree_unflatten(treedef, moves), 0.0

  return Proposal(init, propose, _keep_state)


def _grid_problem(levels: np.ndarray) -> Optional[str]:
  """Why ``x + (l' - x)`` might not land exactly on ``l'``, or None.

  Float addition need not invert subtraction: ``x + (b - a)`` at ``x = a`` is
  ``b`` only when the rounding of ``b - a`` is undone by the rounding of the
  add. Checked for every ordered pair of levels in the params' dtype.
  """
  for a in levels:
    for b in levels:
      if a != b and (a + (b - a)) != b:
        return f"{a!r} + ({b!r} - {a!r}) rounds to {(a + (b - a))!r}"
  return None


def _check_levels(levels: Any) -> np.ndarray:
  """The sorted float64 grid of :func:`discrete`, or an error naming the problem."""
  if isinstance(levels, (str, bytes)) or not hasattr(levels, "__len__"):
    raise TypeError(f"levels must be a sequence of numbers, got {levels!r}.")
  grid = np.asarray(levels, dtype=np.float64)
  if grid.ndim != 1 or grid.size < 2:
    raise ValueError(f"levels must be a flat sequence of at least two numbers, got {levels!r}.")
  if not np.all(np.isfinite(grid)):
    raise ValueError(f"levels must be finite, got {levels!r}.")
  if np.unique(grid).size != grid.size:
    raise ValueError(f"levels must be distinct, got {levels!r}.")
  return np.sort(grid)


def _check_on_grid(params: PyTree, grid: np.ndarray, grid_in: Callable) -> None:
  """Raises if a concrete params leaf has entries off the grid (in its dtype)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    cast = grid_in(jnp.result_type(leaf))
    if base.is_concrete(leaf):
      values = np.asarray(leaf)
      off = ~np.isin(values, cast)
      if np.any(off):
        raise ValueError(
            f"params leaf {trees.leaf_name(path)} has {int(off.sum())} entries off"
            f" the grid {tuple(grid.tolist())} of proposals.discrete (e.g."
            f" {values[off].ravel()[0]!r}); initialise them on it."
        )


def discrete(
    levels: Sequence[float], fraction: base.Scalar, *, step: str = "any"
) -> Proposal:
  r"""Moves parameters that live on a finite grid of levels, staying on it.

  Binary weights are ``levels=(-1.0, 1.0)``; k-level quantised weights give
  their k levels. Each entry joins the move with probability ``fraction`` (at
  least one entry per step, as in :func:`sparse`), and a joining entry at
  level :math:`k` jumps to

  * ``step="any"``: another level, uniformly among the other
    :math:`L-1`: :math:`P(k \to k') = 1/(L-1)` both ways;
  * ``step="neighbour"``: level :math:`k \pm 1` with probability 1/2 each, and
    stays put if that leaves the grid: :math:`P(k \to k \pm 1) = 1/2` both
    ways.

  Either way the move is symmetric (``log_ratio = 0``), so finite-temperature
  Metropolis samples the Boltzmann distribution over the grid exactly.
  Parameters stay floating point (``optax.apply_updates`` and flax work
  unchanged) and exactly on the grid: the move of an entry is
  ``level' - x``, and the levels are checked at ``init`` so that
  ``x + (level' - x) == level'`` holds exactly in the params' dtype (true for
  levels like ``(-1, 1)``, ``(-1, 0, 1)`` or multiples of a power of two;
  scale such levels inside the model rather than using ``0.1``-style grids).
  ``init`` also checks that concrete params start on the grid. ``sigma`` and
  signal-norm ``scales`` are not used.

  Args:
    levels: the grid, at least two distinct finite numbers.
    fraction: probability in (0, 1] that an entry moves.
    step: ``"any"`` or ``"neighbour"``. With two levels both sample the same
      distribution, but a ``"neighbour"`` entry that steps off the grid stays
      put, so it moves half as often.

  Returns:
    A :class:`Proposal` with no state.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> from amc_jax import proposals
    >>> move = proposals.discrete((-1.0, 1.0), fraction=0.25)
    >>> w = jnp.ones(8)
    >>> eps, _ = move.propose(jax.random.key(0), move.init(w), w, 0.1, None)
    >>> sorted(set((w + eps).tolist())) in ([-1.0, 1.0], [1.0], [-1.0])
    True
  """
  grid = _check_levels(levels)
  if step not in ("any", "neighbour"):
    raise ValueError(f"step must be 'any' or 'neighbour', got {step!r}.")
  _check_fraction(fraction)
  n_levels = grid.size
  checked: dict[str, None] = {}

  def grid_in(dtype) -> np.ndarray:
    dtype = jnp.dtype(dtype)
    cast = grid.astype(dtype)
    if dtype.name not in checked:
      if np.unique(cast).size != n_levels:
        raise ValueError(
            f"the levels {tuple(grid.tolist())} are not distinct in {dtype.name}."
        )
      problem = _grid_problem(cast)
      if problem is not None:
        raise ValueError(
            f"proposals.discrete cannot keep {dtype.name} params exactly on the"
            f" levels {tuple(grid.tolist())}: {problem}. Use levels whose"
            " differences are exact in this dtype (e.g. (-1, 1), (-1, 0, 1),"
            " integers or multiples of a power of two) and scale them inside"
            " the model."
        )
      checked[dtype.name] = None
    return cast

  def init(params):
    _check_on_grid(params, grid, grid_in)
    return ()

  def propose(key, state, params, sigma, scales):
    del state, sigma, scales
    mask_key, jump_key = jax.random.split(key)
    mask = _subset_mask(mask_key, params, fraction)
    n = _total_size(params)
    if step == "any":
      jumps = jax.random.randint(jump_key, (n,), 1, n_levels, dtype=jnp.int32)
    else:
      jumps = 2 * jax.random.bernoulli(jump_key, 0.5, (n,)).astype(jnp.int32) - 1
    jumps = _cut(jumps, params, cast=False)

    def leaf_move(x, selected, jump):
      lv = jnp.asarray(grid_in(jnp.result_type(x)))
      spread = lv.reshape((1,) * jnp.ndim(x) + (n_levels,))
      index = jnp.argmin(jnp.abs(x[..., None] - spread), axis=-1).astype(jnp.int32)
      if step == "any":
        target = (index + jump) % n_levels
      else:
        target = jnp.clip(index + jump, 0, n_levels - 1)
      return jnp.where(selected, lv[target] - x, jnp.zeros_like(x))

    return jax.tree_util.tree_map(leaf_move, params, mask, jumps), 0.0

  return Proposal(init, propose, _keep_state)


def _flat_labels(labels: Any, tree: PyTree) -> list:
  """The label of every leaf of ``tree``, in ``tree_leaves`` order."""
  if callable(labels):
    labels = labels(tree)
  try:
    spread = jax.tree_util.tree_map(
        lambda label, sub: [label] * len(jax.tree_util.tree_leaves(sub)), labels, tree
    )
  except (ValueError, TypeError) as e:
    raise ValueError(
        "proposals.partition: labels must be a pytree with the structure of the"
        " params (or a prefix of it), or a function of the params returning"
        f" one; matching them failed with: {e}"
    ) from e
  return jax.tree_util.tree_leaves(spread)


def _masked(tree: PyTree, flat_labels: list, group: Hashable) -> PyTree:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return jax.tree_util.tree_unflatten(
      treedef,
      [x if label == group else optax.MaskedNode() for x, label in zip(leaves, flat_labels)],
  )


def partition(
    proposals: Mapping[Hashable, Proposal],
    labels: Union[PyTree, Callable[[PyTree], PyTree]],
) -> Proposal:
  r"""Different moves for different parts of the params, like ``optax.partition``.

  ``labels`` gives every params leaf the name of its move (a pytree of labels
  with the params' structure or a prefix of it, or a function of the params
  returning one). Each move sees only its own leaves (the others are
  ``optax.MaskedNode``), draws with its own key, and keeps its own state; the
  moves are put together into one move of all the params, so a step makes
  one accept/reject decision for the whole move, with ``log_ratio`` the sum of
  the parts' (the parts are independent).

  The state is a dict ``{label: that move's state}`` over the labels in use.

  Args:
    proposals: ``{label: Proposal}``.
    labels: the label of each leaf (see above).

  Returns:
    A :class:`Proposal`.

  A step that flips a binary weight and shifts the biases is accepted or
  rejected as a whole; near an optimum most flips are rejected, and the
  biases with them. Wrapping the partition in :func:`layerwise` moves one
  leaf per step, so the parts also move on their own (as below).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> from amc_jax import proposals
    >>> params = {"w": jnp.array([1.0, -1.0, 1.0]), "b": jnp.zeros(2)}
    >>> move = proposals.partition(
    ...     {"binary": proposals.discrete((-1.0, 1.0), 0.5),
    ...      "real": proposals.gaussian(epsilon=0.1)},
    ...     {"w": "binary", "b": "real"})
    >>> tx = amc_jax.amc(0.1, proposal=proposals.layerwise(move), seed=0)
    >>> state = tx.init(params)
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum((p["b"] - 0.5) ** 2)
    >>> step = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=loss))
    >>> for _ in range(300):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"].tolist(), bool(state.loss < 0.01)
    ([1.0, 1.0, 1.0], True)
  """
  if not isinstance(proposals, Mapping) or not proposals:
    raise TypeError(
        "proposals.partition needs a non-empty dict {label: Proposal}; got"
        f" {proposals!r}."
    )
  parts = {k: as_proposal(p, f"proposals[{k!r}]") for k, p in proposals.items()}

  def groups(flat_labels: list) -> list:
    unknown = {l for l in flat_labels if l not in parts}
    if unknown:
      raise ValueError(
          f"proposals.partition: the labels {sorted(map(repr, unknown))} have no"
          f" move; the moves are {sorted(map(repr, parts))}."
      )
    return [k for k in parts if k in set(flat_labels)]

  def init(params):
    flat = _flat_labels(labels, params)
    return {g: parts[g].init(_masked(params, flat, g)) for g in groups(flat)}

  def propose(key, state, params, sigma, scales):
    flat = _flat_labels(labels, params)
    used = groups(flat)
    if set(used) != set(state):
      raise ValueError(
          f"proposals.partition: the params carry the labels {used} but the"
          f" state was initialised for {list(state)}."
      )
    keys = jax.random.split(key, len(used))
    pieces, log_ratio = {}, 0.0
    for k, g in zip(keys, used):
      sub_scales = None if scales is None else _masked(scales, flat, g)
      move, ratio = parts[g].propose(k, state[g], _masked(params, flat, g), sigma, sub_scales)
      pieces[g] = iter(jax.tree_util.tree_leaves(move))
      log_ratio = log_ratio + ratio
    treedef = jax.tree_util.tree_structure(params)
    return jax.tree_util.tree_unflatten(treedef, [next(pieces[l]) for l in flat]), log_ratio

  def update(state, move, accepted, reset):
    flat = _flat_labels(labels, move)
    return {
        g: parts[g].update(s, _masked(move, flat, g), accepted, reset)
        for g, s in state.items()
    }

  return Proposal(init, propose, update)
