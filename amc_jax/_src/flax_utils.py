"""Flax glue: a linen train state and an nnx loss adapter for amc_jax.

Flax's ``TrainState.apply_gradients`` calls ``tx.update(grads, opt_state,
params)`` with no extra arguments, so a transformation that needs the loss
(``value_fn=``) cannot be driven through it. :class:`TrainState` forwards them.
``flax.nnx.Optimizer.update`` does forward extra arguments, but it hands the
transformation a pure ``nnx.State`` of the parameters rather than a model;
:func:`nnx_value_fn` turns a loss of the model into a loss of that state.

This module sits outside the step (``amc.py`` knows nothing of flax).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, Optional

import optax
from flax import nnx
from flax.training import train_state

PyTree = Any

# The fp8 "overwrite with gradient" collection of flax.linen: its entries are
# replaced by the incoming grads and never see the optimizer. Flax's own
# TrainState special-cases it in create() and apply_gradients(); so do we.
_OWG = train_state.OVERWRITE_WITH_GRADIENT

# Fields that apply_gradients computes itself and so cannot be replaced.
_COMPUTED = ("step", "params", "opt_state")


def _has_owg(tree: Any) -> bool:
  return isinstance(tree, Mapping) and _OWG in tree


class TrainState(train_state.TrainState):
  """A flax ``TrainState`` that forwards extra arguments to ``tx.update``.

  A drop-in replacement for ``flax.training.train_state.TrainState`` (same
  fields, same :meth:`create`, same ``replace`` and ``step`` counting) whose
  :meth:`apply_gradients` also passes keyword arguments such as ``value_fn=``,
  ``value=`` and ``scales=`` on to ``tx.update``. That is what
  :func:`amc_jax.amc` and :func:`amc_jax.metropolis` need, and what optax's
  line searches need too; gradient optimizers such as ``optax.adam`` ignore
  them. :meth:`apply_loss` is the Monte Carlo spelling: one step that needs a
  loss function and no gradients.

  Keyword arguments of :meth:`apply_gradients` that name a field of the state
  (for example ``batch_stats`` of a subclass) are ``replace``-d, exactly as in
  flax; all others go to ``tx.update``.

  Every method is traceable: call it inside ``jax.jit``, ``jax.lax.scan`` or
  ``jax.vmap`` (an ensemble of states is ``jax.vmap(TrainState.create)`` with
  its optimizer state from :func:`amc_jax.init_ensemble`).

  Examples:
    >>> import flax.linen as nn, jax, jax.numpy as jnp, amc_jax
    >>> x = jnp.linspace(-1.0, 1.0, 32)[:, None]
    >>> y = x**2
    >>> model = nn.Dense(1)
    >>> state = amc_jax.TrainState.create(
    ...     apply_fn=model.apply,
    ...     params=model.init(jax.random.key(0), x),
    ...     tx=amc_jax.amc(sigma0=0.05, epsilon=0.05, seed=0),
    ... )
    >>> @jax.jit
    ... def train_step(state):
    ...   loss_fn = lambda params: jnp.mean((state.apply_fn(params, x) - y) ** 2)
    ...   return state.apply_loss(loss_fn)
    >>> for _ in range(100):
    ...   state = train_step(state)
    >>> int(state.step), int(state.opt_state.count)
    (100, 100)
  """

  def apply_gradients(self, *, grads: Any = None, **kwargs: Any) -> "TrainState":
    """One optimizer step: ``tx.update``, then ``optax.apply_updates``.

    Args:
      grads: gradients like ``params``, for gradient optimizers. Monte Carlo
        transformations ignore them: leave the default ``None``.
      **kwargs: keyword arguments that name a field of the state are
        ``replace``-d in the result (flax's behaviour); all others are passed to
        ``tx.update`` as extra arguments (``value_fn=``, ``value=``,
        ``scales=``, ...).

    Returns:
      A new state with ``step`` incremented by one and ``params`` and
      ``opt_state`` updated.
    """
    field_names = {f.name for f in dataclasses.fields(self)}
    computed = sorted(set(kwargs) & set(_COMPUTED))
    if computed:
      raise TypeError(
          f"apply_gradients computes {', '.join(computed)} itself; set"
          " them with state.replace(...) instead."
      )
    replace = {k: v for k, v in kwargs.items() if k in field_names}
    extra_args = {k: v for k, v in kwargs.items() if k not in field_names}

    # create() gave the optimizer only params["params"] when the fp8 collection
    # is present, so the update must see the same subtree.
    owg = _has_owg(self.params)
    params = self.params["params"] if owg else self.params
    if owg and grads is not None:
      grads_for_tx = grads["params"] if _has_owg(grads) else grads
    else:
      grads_for_tx = grads

    # A plain GradientTransformation takes no extra arguments; optax.chain
    # wraps its members the same way, ignoring extra arguments they do not use.
    tx = optax.with_extra_args_support(self.tx)
    updates, opt_state = tx.update(grads_for_tx, self.opt_state, params, **extra_args)
    new_params = optax.apply_updates(params, updates)
    if owg:
      fp8 = grads[_OWG] if _has_owg(grads) else self.params[_OWG]
      new_params = {"params": new_params, _OWG: fp8}
    return self.replace(
        step=self.step + 1, params=new_params, opt_state=opt_state, **replace
    )

  def apply_loss(
      self, value_fn: Callable[[PyTree], Any], **kwargs: Any
  ) -> "TrainState":
    """One Monte Carlo step: ``apply_gradients(grads=None, value_fn=value_fn)``.

    Named after :meth:`apply_gradients`: a gradient optimizer consumes the
    gradients of the loss, a Monte Carlo one the loss itself.

    Args:
      value_fn: ``value_fn(params) -> scalar loss`` for ``params`` like
        ``state.params`` (usually a closure over ``state.apply_fn`` and this
        step's data). Call it inside the jitted step, so that it closes over
        traced data rather than baking the data in as constants.
      **kwargs: as in :meth:`apply_gradients` (``value=``, ``scales=``, fields
        to replace).

    Returns:
      The state after one step of ``tx``.
    """
    if not callable(value_fn):
      raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}.")
    return self.apply_gradients(grads=None, value_fn=value_fn, **kwargs)


def nnx_value_fn(
    model: Any,
    loss_fn: Callable[[Any], Any],
    wrt: Any = nnx.Param,
    *,
    graph: Optional[bool] = None,
) -> Callable[[PyTree], Any]:
  """Turns ``loss_fn(model)`` into the ``value_fn(params)`` of ``nnx.Optimizer``.

  ``nnx.Optimizer(model, tx, wrt=wrt).update(model, grads, **kwargs)`` passes
  its keyword arguments to ``tx.update``, but calls the transformation with the
  parameters as a pure ``nnx.State``, so ``value_fn`` must accept that state.
  The returned function merges the state into the model's graph definition
  (with the model's other state, e.g. batch statistics, as it is now) and
  returns ``loss_fn`` of that model. The model itself is not modified: a Monte
  Carlo step evaluates proposals that may be rejected.

  Build it inside the jitted step from the model the step receives (see the
  example), so that it sees that call's parameters and state. Anything that
  ``loss_fn`` writes into the merged model (dropout RNG counts, batch-norm
  statistics) is discarded; run the model in evaluation mode, or compute
  such updates separately.

  ``nnx.Optimizer.update`` requires a ``grads`` argument, which Monte Carlo
  transformations ignore: pass ``None`` (flax turns it into an empty state).

  Args:
    model: the ``nnx.Module`` being trained.
    loss_fn: ``loss_fn(model) -> scalar loss``.
    wrt: the filter of the parameters that the optimizer updates; it must be
      the ``wrt`` given to ``nnx.Optimizer``.
    graph: passed to ``nnx.split`` (graph or tree mode; ``None``: flax's
      current default).

  Returns:
    ``value_fn(params) -> loss``, for ``params`` the ``nnx.State`` of ``wrt``.

  Examples:
    >>> import jax.numpy as jnp, amc_jax
    >>> from flax import nnx
    >>> x = jnp.linspace(-1.0, 1.0, 32)[:, None]
    >>> y = x**2
    >>> model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, amc_jax.amc(0.05, 0.05), wrt=nnx.Param)
    >>> @nnx.jit
    ... def train_step(model, optimizer):
    ...   loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
    ...   value_fn = amc_jax.nnx_value_fn(model, loss_fn)
    ...   optimizer.update(model, None, value_fn=value_fn)
    >>> for _ in range(100):
    ...   train_step(model, optimizer)
    >>> int(optimizer.step[...]), int(optimizer.opt_state.count[...])
    (100, 100)
  """
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}.")
  graphdef, _, rest = nnx.split(model, wrt, ..., graph=graph)

  def value_fn(params: PyTree) -> Any:
    # copy=True: the merged model gets its own Variables, so that whatever
    # loss_fn writes into it cannot leak into `model`.
    return loss_fn(nnx.merge(graphdef, params, rest, copy=True))

  return value_fn
