"""Many devices: chains sharded over a mesh axis, or one chain's batch.

Two layouts, both on a :class:`jax.sharding.Mesh`:

* **Chains over devices** (:func:`shard_ensemble`, :func:`ensemble_map`): the
  ensemble of :func:`amc_jax.init_ensemble` has a leading chain axis on every
  leaf, typed PRNG keys included. Sharding that axis puts whole chains on each
  device. Chains never interact, so each device can run its own chains with no
  communication at all. :func:`ensemble_map` is ``jax.vmap`` inside
  ``jax.shard_map`` for that reason: a plain ``jax.jit(jax.vmap(step))`` of
  sharded inputs is correct and stays sharded, but the step's while loops
  (the first-step loss evaluation; in minibatch mode also the NaN guard) get
  a predicate batched over chains, which vmap reduces with an ``any`` over
  *all* chains; sharded, that is a one-boolean all-reduce across devices per
  loop per step (and the guard's host callback, when it runs, gathers every
  chain onto one device). Under ``shard_map`` each device reduces over its
  own chains only.
* **One chain, data-parallel** (:func:`shard_batch`, :func:`replicate`):
  params and :class:`~amc_jax.AMCState` replicated, the dataset's leading
  axis sharded. Every device holds the same key, so draws the same proposal,
  and the loss (a mean over the sharded batch) becomes per-device partial sums
  plus an all-reduce, inserted by XLA's SPMD partitioner: the step itself is
  unchanged. The loss is a scalar all-reduce, so every device takes the same
  accept/reject decision. Users who want the collective written out can put
  the step in ``jax.shard_map`` with ``in_specs=(P(), P(), P("data"))``,
  ``out_specs=P()``, ``check_vma=False`` and ``jax.lax.pmean(loss, "data")``
  in the loss; it computes the same thing.

Multi-host: the same program runs on every host after
``jax.distributed.initialize(...)``; the mesh then spans all hosts' devices
(``jax.devices()`` is global) and the placement helpers build global arrays
with ``jax.make_array_from_callback`` (every host holds the full value, as
after ``init_ensemble``) or, for ``shard_batch(..., process_local=True)``,
``jax.make_array_from_process_local_data`` (each host holds its rows).

Meshes need ``AxisType.Auto`` axes for the chains: with ``Explicit`` axes
("sharding in types") the step's host callback returns unsharded values that
do not type-check against chain-sharded ones. :func:`device_mesh` builds Auto
axes (``jax.make_mesh`` now defaults to Explicit).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from amc_jax._src import trees

PyTree = Any


def device_mesh(
    axis_name: str = "chains", devices: Optional[Sequence[jax.Device]] = None
) -> Mesh:
  """A one-axis mesh over devices, for chains or for a batch.

  Args:
    axis_name: the name of the mesh axis (``"chains"`` for
      :func:`shard_ensemble`, e.g. ``"data"`` for :func:`shard_batch`).
    devices: the devices, in order; default ``jax.devices()``, which after
      ``jax.distributed.initialize`` are the devices of all processes.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``{axis_name: len(devices)}`` whose axis
    is of type ``AxisType.Auto``: arrays carry their sharding, and XLA's
    partitioner propagates it through the step.

  Examples:
    >>> import amc_jax
    >>> mesh = amc_jax.device_mesh("chains")
    >>> mesh.axis_names
    ('chains',)
  """
  if not isinstance(axis_name, str):
    raise TypeError(f"axis_name must be a str, got {axis_name!r}.")
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("device_mesh needs at least one device; got none.")
  return jax.make_mesh(
      (len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices
  )


def _axis_size(mesh: Mesh, axis_name: str, *, auto: bool) -> int:
  """Checks that ``axis_name`` is an axis of ``mesh``; returns its size."""
  if not isinstance(mesh, Mesh):
    raise TypeError(
        f"mesh must be a jax.sharding.Mesh (see amc_jax.device_mesh), got"
        f" {type(mesh).__name__}."
    )
  if axis_name not in mesh.axis_names:
    raise ValueError(
        f"mesh has no axis {axis_name!r}; its axes are {mesh.axis_names}. Pass"
        " axis_name= or build the mesh with amc_jax.device_mesh(axis_name)."
    )
  if auto:
    axis_type = dict(zip(mesh.axis_names, mesh.axis_types))[axis_name]
    if axis_type != AxisType.Auto:
      raise ValueError(
          f"mesh axis {axis_name!r} is of type {axis_type}; chains need an"
          " AxisType.Auto axis (the step's host callback returns unsharded"
          " values, which Explicit sharding does not type-check). Build the"
          " mesh with amc_jax.device_mesh or with jax.make_mesh(...,"
          " axis_types=(jax.sharding.AxisType.Auto,))."
      )
  return mesh.shape[axis_name]


def _check_divisible(size: int, n_devices: int, what: str, axis_name: str) -> None:
  if size % n_devices:
    raise ValueError(
        f"{size} {what} cannot be split evenly over the {n_devices} devices of"
        f" mesh axis {axis_name!r}; use a multiple of {n_devices} {what}."
    )


def _is_key(x: Any) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
  """``jax.device_put(x, sharding)``, also across processes.

  ``device_put`` only targets devices this process can address. For a mesh
  that spans several processes, each process fills in its own shards from the
  full value ``x``, which every process must hold (as it does after the same
  ``init_ensemble`` on every host), with ``jax.make_array_from_callback``.
  """
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    # Already a global array: let XLA move it.
    return jax.jit(lambda a: a, out_shardings=sharding)(x)
  # Typed keys have no NumPy dtype; slicing them as jax Arrays works too.
  value = x if _is_key(x) else np.asarray(x)
  return jax.make_array_from_callback(np.shape(value), sharding, lambda i: value[i])


def shard_ensemble(
    params: PyTree, state: PyTree, mesh: Mesh, axis_name: str = "chains"
) -> tuple[PyTree, PyTree]:
  """Places an ensemble's chains over the devices of one mesh axis.

  Every leaf of ``params`` and ``state`` (as from
  :func:`amc_jax.init_ensemble`, typed PRNG keys included) gets
  ``NamedSharding(mesh, P(axis_name))``: its leading chain axis is split into
  equal blocks of whole chains, one per device. A step mapped with
  :func:`ensemble_map` then runs each block on its own device, and its outputs
  keep this sharding. Placing once, before the loop, keeps the steps free of
  transfers.

  Args:
    params: pytree whose leaves all have a leading chain axis of size M.
    state: the ensemble state, with the same leading axis M.
    mesh: a ``jax.sharding.Mesh`` with an ``AxisType.Auto`` axis
      ``axis_name`` (see :func:`device_mesh`) whose size divides M.
    axis_name: the mesh axis to shard the chains over.

  Returns:
    ``(params, state)``, sharded over ``axis_name``.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.amc(sigma0=0.1)
    >>> params = jnp.zeros((8, 3))  # 8 chains
    >>> state = amc_jax.init_ensemble(tx, params, jax.random.key(0))
    >>> mesh = amc_jax.device_mesh("chains")
    >>> params, state = amc_jax.shard_ensemble(params, state, mesh)
    >>> state.key.sharding.spec
    P('chains',)
  """
  n_devices = _axis_size(mesh, axis_name, auto=True)
  n_chains = trees.leading_size(params, "params", "to shard")
  n_state = trees.leading_size(state, "state", "to shard")
  if n_state != n_chains:
    raise ValueError(
        f"params have {n_chains} chains but the state has {n_state}; build the"
        " state with amc_jax.init_ensemble(tx, params, key)."
    )
  _check_divisible(n_chains, n_devices, "chains", axis_name)
  sharding = NamedSharding(mesh, P(axis_name))
  place = lambda x: _place(x, sharding)  # noqa: E731
  return jax.tree_util.tree_map(place, params), jax.tree_util.tree_map(place, state)


def shard_replicas(
    params: PyTree, state: PyTree, mesh: Mesh, axis_name: str = "chains"
) -> tuple[PyTree, PyTree]:
  """Places the replicas of :func:`~amc_jax.replica_exchange`,
  :func:`~amc_jax.population` or :func:`~amc_jax.population_annealing` over a
  mesh axis.

  The params and every state leaf whose leading axis is the replica axis (the
  wrapped transformation's per-replica state, the temperature of each
  replica) are split into equal blocks of whole replicas, one per device; the
  rest of the state (the swap key, counters, ``log_z``) is replicated. Then
  ``jax.jit`` of the wrapper's ``update`` runs each device's replicas there:
  the steps need no communication, and the swap, the cloning or the
  resampling (a gather of the replicas' losses and of the copied states) is
  all that crosses devices, inserted by XLA's SPMD partitioner.

  Args:
    params: the wrappers' params, a leading replica axis of size R on every
      leaf.
    state: the wrapper's state from its ``init``.
    mesh: a mesh with an ``AxisType.Auto`` axis ``axis_name`` whose size
      divides R (see :func:`device_mesh`).
    axis_name: the mesh axis to shard the replicas over.

  Returns:
    ``(params, state)``, placed.

  Examples:
    >>> import jax, jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.replica_exchange(amc_jax.metropolis(0.3), temperatures=(0.5, 1.0))
    >>> params = jnp.zeros((2, 3))              # 2 replicas of 3 parameters
    >>> mesh = amc_jax.device_mesh("chains")    # all devices (one CPU here)
    >>> params, state = amc_jax.shard_replicas(params, tx.init(params), mesh)
    >>> params.sharding.spec == jax.sharding.PartitionSpec("chains")
    True
  """
  n_devices = _axis_size(mesh, axis_name, auto=True)
  n = trees.leading_size(params, "params", "to shard")
  _check_divisible(n, n_devices, "replicas", axis_name)
  split = NamedSharding(mesh, P(axis_name))
  whole = NamedSharding(mesh, P())

  def place(x):
    per_replica = np.ndim(x) >= 1 and np.shape(x)[0] == n
    return _place(x, split if per_replica else whole)

  return jax.tree_util.tree_map(place, params), jax.tree_util.tree_map(place, state)


def ensemble_map(
    fn: Callable[..., Any],
    mesh: Mesh,
    *,
    in_axes: Any = 0,
    axis_name: str = "chains",
) -> Callable[..., Any]:
  """``jax.vmap(fn)`` over chains, each device running only its own chains.

  The result is ``jax.shard_map(jax.vmap(fn, in_axes), mesh, ...)``: every
  argument mapped with axis 0 is split over ``axis_name`` (whole chains per
  device, as :func:`shard_ensemble` places them), arguments with ``None`` are
  replicated, and every output has the leading chain axis, sharded. Inside,
  each device vmaps ``fn`` over its block of chains. Chains are independent,
  so the compiled program has no cross-device communication, and chain ``k``
  follows exactly the trajectory it follows under ``jax.vmap(fn)`` on one
  device.

  Why not plain ``jax.jit(jax.vmap(fn))`` on sharded inputs: it is correct and
  its outputs stay sharded, but vmap turns each ``lax.while_loop`` of the
  step (first-step loss evaluation; NaN guard in minibatch mode) into a loop
  over ``any`` of all chains' predicates, an all-reduce across devices on
  every step; under ``shard_map`` that ``any`` covers a device's own chains.

  ``check_vma`` is off: those loops build their carries from constants and
  host callbacks, which ``shard_map``'s type checker counts as unvarying over
  ``axis_name``, although the values are per chain.
  The check guards outputs claimed equal across devices; here every output is
  per chain (sharded), so there is none to guard.

  With several CPU devices, jaxlib 0.10.2 can abort or hang when Python exits
  while such steps (host callback inside ``shard_map``) are still running:
  use the results, or ``jax.block_until_ready`` them, before the program ends.

  Args:
    fn: the per-chain function, e.g. ``lambda p, s: tx.update(None, s, p,
      value_fn=loss)``; it sees one chain's params and state.
    mesh: a ``jax.sharding.Mesh`` with an ``AxisType.Auto`` axis
      ``axis_name`` (see :func:`device_mesh`).
    in_axes: ``0`` (every argument has the leading chain axis), ``None``
      (for a tuple entry: an argument shared by all chains, e.g. a batch), or
      a tuple of ``0``/``None`` with one entry per positional argument (pytree
      prefixes allowed, as in ``jax.vmap``).
    axis_name: the mesh axis the chains are sharded over.

  Returns:
    A function of the same positional arguments as ``jax.vmap(fn, in_axes)``
    returning the outputs with a leading chain axis. Wrap it in ``jax.jit``
    (or call it inside a jitted ``lax.scan``).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> tx = amc_jax.amc(sigma0=0.1, epsilon=0.1)
    >>> params = jnp.zeros((8, 3))  # 8 chains
    >>> state = amc_jax.init_ensemble(tx, params, jax.random.key(0))
    >>> mesh = amc_jax.device_mesh("chains")
    >>> params, state = amc_jax.shard_ensemble(params, state, mesh)
    >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> def step(p, s):
    ...   updates, s = tx.update(None, s, p, value_fn=loss)
    ...   return optax.apply_updates(p, updates), s
    >>> run = jax.jit(amc_jax.ensemble_map(step, mesh))
    >>> for _ in range(100):
    ...   params, state = run(params, state)
    >>> params.sharding.spec, state.count.shape
    (P('chains',), (8,))
  """
  if not callable(fn):
    raise TypeError(f"fn must be callable, got {type(fn).__name__}.")
  n_devices = _axis_size(mesh, axis_name, auto=True)
  if in_axes is None:
    raise ValueError("in_axes=None maps nothing over chains; use 0 for the chain-mapped arguments.")
  is_none = lambda x: x is None  # noqa: E731
  if isinstance(in_axes, list):
    in_axes = tuple(in_axes)
  for axis in jax.tree_util.tree_leaves(in_axes, is_leaf=is_none):
    if axis is not None and (isinstance(axis, bool) or axis != 0):
      raise ValueError(
          "ensemble_map maps over the leading (chain) axis only: in_axes"
          f" entries must be 0 or None, got {axis!r}."
      )
  mapped_fn = jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    # One in_axes for all arguments, or one entry (a pytree prefix) per argument.
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    if len(axes) != len(args):
      raise ValueError(
          f"in_axes has {len(axes)} entries but the function was called with"
          f" {len(args)} positional arguments."
      )
    chain_leaves = []
    for axis_tree, arg in zip(axes, args):
      flat_axes, treedef = jax.tree_util.tree_flatten(axis_tree, is_leaf=is_none)
      for axis, sub in zip(flat_axes, treedef.flatten_up_to(arg)):
        if axis is not None:
          chain_leaves.extend(jax.tree_util.tree_leaves(sub))
    if chain_leaves:
      n_chains = trees.leading_size(chain_leaves, "the chain-mapped arguments", "to shard")
      _check_divisible(n_chains, n_devices, "chains", axis_name)
    to_spec = lambda axis: P() if axis is None else P(axis_name)  # noqa: E731
    in_specs = jax.tree_util.tree_map(to_spec, axes, is_leaf=is_none)
    return jax.shard_map(
        mapped_fn,
        mesh=mesh,
        in_specs=in_specs,
        out_specs=P(axis_name),
        check_vma=False,
    )(*args)

  return mapped


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a full copy of every leaf of ``tree`` on every device of ``mesh``.

  For the params and :class:`~amc_jax.AMCState` of a data-parallel chain (see
  :func:`shard_batch`): every device holds the same key, so it draws the same
  proposal and takes the same accept/reject decision. Works across processes
  when every process holds the same ``tree``.

  Args:
    tree: a pytree of arrays (typed PRNG keys included).
    mesh: a ``jax.sharding.Mesh``.

  Returns:
    ``tree`` with every leaf sharded as ``NamedSharding(mesh, P())``.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> mesh = amc_jax.device_mesh("data")
    >>> params = amc_jax.replicate({"w": jnp.zeros(3)}, mesh)
    >>> params["w"].sharding.is_fully_replicated
    True
  """
  if not isinstance(mesh, Mesh):
    raise TypeError(
        f"mesh must be a jax.sharding.Mesh (see amc_jax.device_mesh), got"
        f" {type(mesh).__name__}."
    )
  sharding = NamedSharding(mesh, P())
  return jax.tree_util.tree_map(lambda x: _place(x, sharding), tree)


def shard_batch(
    data: PyTree,
    mesh: Mesh,
    axis_name: str = "data",
    *,
    process_local: bool = False,
) -> PyTree:
  """Splits a dataset's leading (example) axis over the devices of a mesh axis.

  With the params and state :func:`replicate` d, a jitted step whose loss is a
  mean over this data evaluates it data-parallel: each device computes its
  examples' partial sum and XLA's SPMD partitioner adds the all-reduce, so the
  loss, and with it every accept/reject decision, is the same on all devices.
  Neither the step nor the loss changes. The result equals the one-device
  run's up to the order of the summation: a mean's last bits may differ, and
  a decision with it only where U(x') and U(x) are that close.

  Scan the steps inside one jitted program, as below, or wait for each call's
  result before the next: with several CPU devices, jaxlib 0.10.2 deadlocks
  (and aborts after 40 s) when a Python loop puts ~100 or more calls of a
  program with a collective in flight at once.

  Args:
    data: a pytree of arrays (inputs, targets, ...) with a common leading axis.
    mesh: a ``jax.sharding.Mesh`` with an axis ``axis_name``.
    axis_name: the mesh axis to split the examples over.
    process_local: ``False``: ``data`` is the whole dataset, the same on every
      process. ``True`` (multi-host): ``data`` is this process's rows only, in
      process order, and the global array is assembled with
      ``jax.make_array_from_process_local_data``.

  Returns:
    ``data`` with every leaf sharded as ``NamedSharding(mesh, P(axis_name))``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, amc_jax
    >>> mesh = amc_jax.device_mesh("data")
    >>> x = jnp.linspace(-1.0, 1.0, 64)
    >>> data = amc_jax.shard_batch({"x": x, "y": 2.0 * x}, mesh)
    >>> tx = amc_jax.amc(sigma0=0.1)
    >>> params = jnp.zeros(())
    >>> params, state = amc_jax.replicate((params, tx.init(params)), mesh)
    >>> @jax.jit
    ... def run(params, state, data):
    ...   loss = lambda w: jnp.mean((w * data["x"] - data["y"]) ** 2)
    ...   def step(carry, _):
    ...     params, state = carry
    ...     updates, state = tx.update(None, state, params, value_fn=loss)
    ...     return (optax.apply_updates(params, updates), state), None
    ...   return jax.lax.scan(step, (params, state), None, length=200)[0]
    >>> params, state = run(params, state, data)
    >>> bool(abs(params - 2.0) < 0.05), data["x"].sharding.spec
    (True, P('data',))
  """
  if not isinstance(process_local, bool):
    raise TypeError(f"process_local must be a bool, got {process_local!r}.")
  n_devices = _axis_size(mesh, axis_name, auto=False)
  sharding = NamedSharding(mesh, P(axis_name))
  size = trees.leading_size(data, "data", "to shard")
  if not process_local:
    _check_divisible(size, n_devices, "examples", axis_name)
    return jax.tree_util.tree_map(lambda x: _place(x, sharding), data)
  # Each process's rows cover its own devices' blocks of the axis.
  n_local = len(set(mesh.devices.flat) & set(jax.local_devices()))
  _check_divisible(size, n_local, "local examples", axis_name)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), data
  )
