"""Checkpoints of any pytree: params, AMCState, optax states, train states.

A checkpoint is an Orbax checkpoint directory (``orbax.checkpoint``'s
``StandardCheckpointer``, as flax's documentation uses), of a nested dict
built from JAX key paths: ``{"params": {"Dense_0": {"kernel": ...}},
"opt_state": {"mu": ..., "key": ...}}``. For dicts, lists, named tuples and
flax dataclasses this is the layout of flax's state dicts; unlike
``flax.serialization.to_state_dict`` it covers every registered pytree,
``nnx.State`` included. Typed PRNG keys (``jax.random.key``) are saved by
Orbax as such (their implementations are also listed in the checkpoint's
custom metadata), so a resumed run draws the same numbers. Orbax restores
sharded arrays onto the target's sharding, whatever the device count they
were saved from.

Files written by earlier amc_jax (flax msgpack, one file) are still read,
with a ``DeprecationWarning``; save them again to convert.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

PyTree = Any
PathLike = Union[str, "os.PathLike[str]"]

_FORMAT = "amc_jax.checkpoint"
_VERSION = 1  # the msgpack files of earlier amc_jax
_ORBAX_VERSION = 2
# The name under which a pytree that is a single leaf is saved.
_ROOT = "__root__"
_KEY_IMPL = "__prng_key_impl__"
_KEY_DATA = "key_data"
# How many mismatches an error message lists before it says "and N more".
_MAX_LISTED = 8


def _is_prng_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _entry_name(entry: Any) -> str:
  """The dict key under which one step of a JAX key path is stored."""
  if isinstance(entry, jax.tree_util.DictKey):
    return str(entry.key)
  if isinstance(entry, jax.tree_util.GetAttrKey):
    return entry.name
  if isinstance(entry, jax.tree_util.SequenceKey):
    return str(entry.idx)
  if isinstance(entry, jax.tree_util.FlattenedIndexKey):
    return str(entry.key)
  return str(entry)


def _names(path: Any) -> tuple[str, ...]:
  return tuple(_entry_name(e) for e in path)


def _where(names: tuple[str, ...]) -> str:
  return "/".join(names) or "<root>"


def _checked(x: Any, names: tuple[str, ...], numbers: tuple[type, ...]) -> Any:
  """``x``, if it is a concrete array (a typed PRNG key included) or a number."""
  if isinstance(x, jax.core.Tracer):
    raise TypeError(
        f"save_checkpoint needs concrete values, but the leaf {_where(names)} is"
        " a tracer: save outside jax.jit / jax.lax.scan / jax.vmap."
    )
  if not isinstance(x, numbers + (np.generic, jax.Array, np.ndarray)):
    raise TypeError(
        f"save_checkpoint stores arrays and numbers; the leaf {_where(names)} is a"
        f" {type(x).__name__}. Keep it out of the saved pytree (e.g. as a static"
        " field)."
    )
  return x


def _encode_leaf(x: Any, names: tuple[str, ...]) -> Any:
  """A leaf of an earlier amc_jax's msgpack file (a key as impl + data)."""
  x = _checked(x, names, (bool, int, float, complex))
  if _is_prng_key(x):
    return {
        _KEY_IMPL: str(jax.random.key_impl(x)),
        _KEY_DATA: np.asarray(jax.device_get(jax.random.key_data(x))),
    }
  if isinstance(x, (jax.Array, np.ndarray)):
    return np.asarray(jax.device_get(x))
  return x


def _orbax_leaf(x: Any, names: tuple[str, ...]) -> Any:
  """A leaf as Orbax saves it: arrays (typed PRNG keys included) and numbers."""
  x = _checked(x, names, (bool, int, float))
  return np.asarray(x) if isinstance(x, np.generic) else x


def _nest(tree: PyTree, encode: Callable[[Any, tuple[str, ...]], Any],
          root: Optional[str] = None) -> Any:
  """The nested dict of ``tree``'s leaves (``encode``-d) under their key-path
  names; a tree that is a single leaf is that leaf (``root=None``) or
  ``{root: leaf}``."""
  nested: dict = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = _names(path)
    if not names:  # the tree is a single array or key
      if root is None:
        return encode(leaf, names)
      names = (root,)
    node = nested
    for i, name in enumerate(names[:-1]):
      node = node.setdefault(name, {})
      if not isinstance(node, dict) or _KEY_IMPL in node:
        raise ValueError(f"two leaves of the pytree map to {_where(names[: i + 1])}.")
    if names[-1] in node:
      raise ValueError(f"two leaves of the pytree map to {_where(names)}.")
    node[names[-1]] = encode(leaf, names)
  return nested


def _to_orbax(tree: PyTree) -> tuple[dict, dict]:
  """(the nested dict Orbax saves, {path: PRNG key implementation})."""
  keys = {
      _where(_names(path) or (_ROOT,)): str(jax.random.key_impl(leaf))
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
      if _is_prng_key(leaf)
  }
  return _nest(tree, _orbax_leaf, _ROOT), keys


def _flatten_saved(nested: Any, names: tuple[str, ...] = ()) -> dict:
  """{path names: saved leaf} for a nested dict read from a checkpoint."""
  if isinstance(nested, dict) and _KEY_IMPL not in nested:
    out = {}
    for name, child in nested.items():
      out.update(_flatten_saved(child, names + (str(name),)))
    return out
  return {names: nested}


def save_checkpoint(path: PathLike, tree: PyTree) -> None:
  """Writes a pytree of arrays to the Orbax checkpoint directory ``path``.

  The pytree may hold params, an :class:`~amc_jax.AMCState` (its typed PRNG
  key included), any optax state, a flax ``TrainState`` (or
  :class:`amc_jax.TrainState`; its ``apply_fn`` and ``tx`` are static and are
  not saved) or an ``nnx.State`` (e.g. ``nnx.state((model, optimizer))``).
  Orbax writes to a temporary directory and renames it into place when the
  save is complete, so an interrupted save never leaves a truncated
  checkpoint behind; an existing checkpoint at ``path`` is replaced, and
  missing parent directories are created. The call returns when the
  checkpoint is on disk.

  Orbax's own ``StandardCheckpointer().restore(path)`` reads it too (a nested
  dict of the saved arrays, typed keys included); for many checkpoints with
  retention, pass the same nested dict to an ``orbax.checkpoint.
  CheckpointManager`` (see the README's "Flax and checkpoints").

  Args:
    path: the checkpoint directory to write (replaced if it exists).
    tree: a pytree whose leaves are JAX or NumPy arrays, typed PRNG keys or
      Python numbers (concrete values: call it outside ``jax.jit``).

  Examples:
    >>> import os, tempfile, jax.numpy as jnp, amc_jax
    >>> tx = amc_jax.amc(sigma0=0.1, seed=0)
    >>> state = tx.init({"w": jnp.zeros(3)})
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> amc_jax.save_checkpoint(path, state)
    >>> restored = amc_jax.restore_checkpoint(path, tx.init({"w": jnp.ones(3)}))
    >>> restored.key.dtype, restored.sigma
    (key<fry>, Array(0.1, dtype=float32))
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  nested, keys = _to_orbax(tree)
  path = os.path.abspath(os.fspath(path))
  if os.path.isfile(path):
    os.remove(path)  # an earlier amc_jax's msgpack file of the same name
  os.makedirs(os.path.dirname(path), exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(
      path, nested, force=True,
      custom_metadata={"format": _FORMAT, "version": _ORBAX_VERSION, "prng_keys": keys},
  )
  checkpointer.wait_until_finished()


def save_checkpoint_msgpack(path: PathLike, tree: PyTree) -> None:
  """The msgpack file of earlier amc_jax (for the tests of reading it)."""
  nested = _nest(tree, _encode_leaf)
  data = serialization.msgpack_serialize(
      {"format": _FORMAT, "version": _VERSION, "tree": nested}
  )
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
  )
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _dtype(x: Any) -> np.dtype:
  """The dtype of a leaf as stored (NumPy's, without JAX's x64 canonicalisation)."""
  return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _kind(dtype: Any) -> str:
  """'b' bool, 'i' integer (signed or not), 'f' float, 'c' complex."""
  kind = np.dtype(dtype).kind
  return "i" if kind == "u" else kind


def _describe(x: Any) -> str:
  if isinstance(x, dict):
    if _KEY_IMPL in x:
      return f"a PRNG key ({x[_KEY_IMPL]}) of shape {list(np.shape(x[_KEY_DATA]))[:-1]}"
    return "a subtree"
  if isinstance(x, (bool, int, float, complex)):
    return f"the Python {type(x).__name__} {x!r}"
  return f"{np.dtype(_dtype(x))}{list(np.shape(x))}"


def _describe_target(x: Any) -> str:
  if _is_prng_key(x):
    return f"a PRNG key ({jax.random.key_impl(x)}) of shape {list(x.shape)}"
  if isinstance(x, (bool, int, float, complex)):
    return f"a Python {type(x).__name__}"
  return f"{_dtype(x)}{list(np.shape(x))}"


def _leaf_mismatch(target: Any, saved: Any) -> bool:
  """True unless ``saved`` can be restored as ``target`` without any change."""
  if _is_prng_key(target):
    if not (isinstance(saved, dict) and _KEY_IMPL in saved):
      return True
    data_shape = jax.random.key_data(target).shape
    return (
        saved[_KEY_IMPL] != str(jax.random.key_impl(target))
        or np.shape(saved[_KEY_DATA]) != data_shape
        or _dtype(saved[_KEY_DATA]) != jax.random.key_data(target).dtype
    )
  if isinstance(saved, dict):
    return True
  t_python = isinstance(target, (bool, int, float, complex))
  s_python = isinstance(saved, (bool, int, float, complex))
  if t_python or s_python:
    # A Python number (e.g. flax's initial step = 0) matches any scalar array
    # of its kind: after a jitted step it comes back as one.
    return np.shape(target) != np.shape(saved) or _kind(_dtype(target)) != _kind(
        _dtype(saved)
    )
  return np.shape(saved) != np.shape(target) or _dtype(saved) != _dtype(target)


def _restore_leaf(target: Any, saved: Any) -> Any:
  if _is_prng_key(target):
    key = jax.random.wrap_key_data(
        jnp.asarray(saved[_KEY_DATA]), impl=jax.random.key_impl(target)
    )
    return _place_like(key, target)
  if isinstance(target, (bool, int, float, complex)):
    return saved if isinstance(saved, (bool, int, float, complex)) else jnp.asarray(saved)
  if isinstance(target, jax.Array):
    value = jnp.asarray(saved, dtype=target.dtype)
    return _place_like(value, target)
  return np.asarray(saved, dtype=_dtype(target))


def _place_like(value: jax.Array, target: jax.Array) -> jax.Array:
  # A target committed to devices (e.g. sharded) gets the restored value on
  # the same devices; an uncommitted one leaves the placement to JAX.
  if getattr(target, "committed", False):
    return jax.device_put(value, target.sharding)
  return value


def _listed(items: list[str]) -> str:
  shown = ", ".join(items[:_MAX_LISTED])
  more = len(items) - _MAX_LISTED
  return shown + (f" and {more} more" if more > 0 else "")


def restore_checkpoint(path: PathLike, target: PyTree) -> PyTree:
  """Reads a checkpoint written by :func:`save_checkpoint` into ``target``'s structure.

  Arrays come back on the target's sharding where the target's arrays are
  committed to devices (e.g. an ensemble sharded with
  :func:`~amc_jax.shard_ensemble`), whatever the device count at saving. A
  msgpack file written by an earlier amc_jax is read too, with a
  ``DeprecationWarning``.

  ``target`` gives the pytree structure, the static parts (a train state's
  ``apply_fn`` and ``tx``) and the expected shape and dtype of every leaf;
  its values are not used. Make it the way the saved tree was made, e.g.
  ``tx.init(params)`` or ``TrainState.create(...)`` for the same model and
  optimizer (``init_ensemble`` for an ensemble). Every restored array has the
  saved shape and dtype, and every PRNG key is a typed key of the saved
  implementation, so training resumed from a checkpoint continues bit for bit
  as if it had never stopped.

  Args:
    path: file written by :func:`save_checkpoint`.
    target: a pytree with the structure of the saved one (concrete values).

  Returns:
    A pytree with the structure of ``target`` and the saved values.

  Raises:
    FileNotFoundError: there is no checkpoint at ``path``.
    ValueError: it is not an amc_jax checkpoint, or its tree does not match
      ``target`` (the message lists the mismatching paths).

  Examples:
    >>> import os, tempfile, jax, jax.numpy as jnp, optax, amc_jax
    >>> params = {"w": jnp.zeros(2)}
    >>> tx = amc_jax.amc(sigma0=0.1, epsilon=0.1, seed=0)
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(None, state, params, value_fn=loss)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> amc_jax.save_checkpoint(path, {"params": params, "opt_state": state})
    >>> target = {"params": params, "opt_state": tx.init(params)}
    >>> restored = amc_jax.restore_checkpoint(path, target)
    >>> int(restored["opt_state"].count)
    1
    >>> bool(jnp.all(jax.random.key_data(restored["opt_state"].key)
    ...               == jax.random.key_data(state.key)))
    True
  """
  path = os.path.abspath(os.fspath(path))
  orbax = os.path.isdir(path)
  if orbax:
    saved, restore = _read_orbax(path)
  elif os.path.isfile(path):
    warnings.warn(
        f"{path!r} is a msgpack checkpoint of an earlier amc_jax; amc_jax now"
        " writes Orbax checkpoint directories. Save the restored tree again with"
        " amc_jax.save_checkpoint to convert it.",
        DeprecationWarning,
        stacklevel=2,
    )
    saved = _read_msgpack(path)
  else:
    raise FileNotFoundError(f"no checkpoint file at {path!r}.")

  paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  # Orbax saves a root leaf under a name; the msgpack files stored it bare.
  names = [_names(p) or ((_ROOT,) if orbax else ()) for p, _ in paths_and_leaves]
  _check_structure(path, saved, names, paths_and_leaves)
  if orbax:
    values = restore(target)
    leaves = [_restore_orbax_leaf(leaf, values[n]) for n, (_, leaf) in zip(names, paths_and_leaves)]
  else:
    leaves = [_restore_leaf(leaf, saved[n]) for n, (_, leaf) in zip(names, paths_and_leaves)]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _read_msgpack(path: str) -> dict:
  """{path names: saved leaf} of an earlier amc_jax's msgpack file."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    contents = serialization.msgpack_restore(data)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path!r} is not a readable msgpack checkpoint: {e!r}") from e
  if not (isinstance(contents, dict) and contents.get("format") == _FORMAT):
    raise ValueError(f"{path!r} is not an amc_jax checkpoint (no {_FORMAT!r} header).")
  if contents.get("version") != _VERSION:
    raise ValueError(
        f"{path!r} is an amc_jax checkpoint of version {contents.get('version')!r};"
        f" this amc_jax reads version {_VERSION}."
    )
  return _flatten_saved(contents.get("tree", {}))


def _read_orbax(path: str):
  """({path names: a stand-in of each saved leaf, from the metadata}, a
  function of the target that restores its leaves onto its shardings)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  checkpointer = ocp.StandardCheckpointer()
  try:
    meta = checkpointer.metadata(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path!r} is not a readable Orbax checkpoint: {e!r}") from e
  custom = getattr(meta, "custom_metadata", None) or {}
  if custom.get("format") != _FORMAT:
    raise ValueError(
        f"{path!r} is not an amc_jax checkpoint (no {_FORMAT!r} in its custom"
        " metadata); read it with orbax.checkpoint.StandardCheckpointer()."
    )
  if custom.get("version") != _ORBAX_VERSION:
    raise ValueError(
        f"{path!r} is an amc_jax checkpoint of version {custom.get('version')!r};"
        f" this amc_jax reads version {_ORBAX_VERSION}."
    )
  keys = custom.get("prng_keys", {})
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  saved = {}
  for names, m in _flatten_saved(tree).items():
    saved[names] = _stand_in(m, keys.get(_where(names)))

  def restore(target):
    abstract = _nest(target, lambda leaf, names: _abstract(leaf, saved[names]), _ROOT)
    return _flatten_saved(checkpointer.restore(path, abstract))

  return saved, restore


def _stand_in(meta: Any, key_impl: Any) -> Any:
  """What ``_leaf_mismatch`` and ``_describe`` read: a PRNG key record, a
  Python number of the saved kind, or a shape-dtype struct."""
  shape, dtype = tuple(getattr(meta, "shape", ()) or ()), np.dtype(getattr(meta, "dtype", "float32"))
  if key_impl is not None:
    return {_KEY_IMPL: key_impl, _KEY_DATA: jax.ShapeDtypeStruct(shape, dtype)}
  if type(meta).__name__ == "ScalarMetadata":
    return {"b": False, "i": 0, "u": 0, "f": 0.0, "c": 0j}[dtype.kind]
  return jax.ShapeDtypeStruct(shape, dtype)


def _abstract(target: Any, saved: Any) -> Any:
  """The abstract leaf Orbax restores into: the target's shape, dtype and
  sharding (a committed target), or the saved Python number."""
  if isinstance(saved, (bool, int, float, complex)):
    return saved
  # Always a sharding of this process's devices: Orbax otherwise restores
  # onto the saved devices, which may not exist here.
  if isinstance(target, jax.Array):
    sharding = target.sharding
  else:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.ShapeDtypeStruct(np.shape(target), target.dtype if _is_prng_key(target)
                              else _dtype(target), sharding=sharding)


def _restore_orbax_leaf(target: Any, value: Any) -> Any:
  if _is_prng_key(target):
    return _place_like(value, target)
  if isinstance(target, (bool, int, float, complex)):
    return value if isinstance(value, (bool, int, float, complex)) else jnp.asarray(value)
  if isinstance(target, jax.Array):
    return _place_like(jnp.asarray(value, dtype=target.dtype), target)
  return np.asarray(value, dtype=_dtype(target))


def _check_structure(path: str, saved: dict, names: list, paths_and_leaves: list) -> None:
  """Raises a ValueError that lists every path where ``saved`` and the target differ."""
  missing = [_where(n) for n in names if n not in saved]
  unexpected = sorted(_where(n) for n in set(saved) - set(names))
  problems = []
  if missing:
    problems.append(f"missing from the checkpoint: {_listed(missing)}")
  if unexpected:
    problems.append(f"in the checkpoint but not in target: {_listed(unexpected)}")
    if any("mu" in n for n in set(saved) - set(names)):
      problems.append(
          "a state of amc or metropolis with epsilon = 0 saved by an earlier amc_jax"
          " holds zero centres (mu), which such states no longer keep: restore it"
          " into the state of amc(..., epsilon=jnp.asarray(0.0)) (an array epsilon"
          " keeps them), then continue with that transformation, or start anew"
      )
  mismatched = [
      f"{_where(n)} (target {_describe_target(leaf)}, checkpoint"
      f" {_describe(saved[n])})"
      for n, (_, leaf) in zip(names, paths_and_leaves)
      if n in saved and _leaf_mismatch(leaf, saved[n])
  ]
  if mismatched:
    problems.append(f"different leaves: {_listed(mismatched)}")
  if problems:
    raise ValueError(
        f"the checkpoint {path!r} does not match the structure of target; "
        + "; ".join(problems)
        + "."
    )
