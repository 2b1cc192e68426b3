"""CartPole-v1 solved by aMC: a policy trained on its return, which has no gradient.

A small flax MLP maps the cart's 4 observations to the logits of its 2
actions and acts greedily. The loss of the params is minus the mean return
over a batch of episodes of gymnax's CartPole-v1 (``-mean return / 500``),
every episode a ``lax.scan`` of 500 steps and the batch ``jax.vmap``-ed, all
in the one jitted step of :func:`amc_jax.fit`. An episode's return depends on
its key (the initial state), so the step draws fresh episode keys and
evaluates U(x) and U(x') on the same episodes (``fit(...,
random_loss=True)``: common random numbers). The policy counts as solved
when its mean return over 100 evaluation episodes, on keys it was not
trained on, is at least 475 (of 500).

  python -m amc_jax.examples.cartpole              # ~1000 steps, ~20 s on 2 CPU cores
  python -m amc_jax.examples.cartpole --steps 200  # shorter

Needs gymnax: ``pip install 'amc_jax[control]'``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import amc_jax
from amc_jax.examples import _cli

DEFAULT_STEPS = 1000
DEFAULT_EPISODES = 16
DEFAULT_SIGMA0 = 0.3
SOLVED = 475.0
EVAL_EPISODES = 100


def environment():
  """gymnax's CartPole-v1: ``(env, env_params)``; a clear error without gymnax."""
  try:
    import gymnax  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "amc_jax.examples.cartpole needs gymnax: pip install 'amc_jax[control]'"
        " (or pip install gymnax six)."
    ) from e
  return gymnax.make("CartPole-v1")


def policy_network(hidden: int = 16, outputs: int = 2):
  """The policy: observations -> tanh(Dense(hidden)) -> Dense(outputs) (the
  logits of CartPole's 2 actions)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  class Policy(nn.Module):
    @nn.compact
    def __call__(self, obs):
      return nn.Dense(outputs)(jnp.tanh(nn.Dense(hidden)(obs)))

  return Policy()


def greedy(policy):
  """``act(params, obs)``: the action of highest logit."""
  return lambda params, obs: jnp.argmax(policy.apply(params, obs))


def env_step(env, key: jax.Array, state, action, env_params):
  """``(obs, state, reward, done)`` of one gymnax step, with ``done`` =
  terminated or truncated: gymnax 1.0 returns ``(obs, state, reward,
  terminated, truncated, info)``, 0.0.x ``(obs, state, reward, done, info)``
  (pip picks 0.0.9 where 1.0 does not install, such as next to jax 0.12)."""
  out = env.step(key, state, action, env_params)
  if len(out) == 6:
    obs, state, reward, terminated, truncated, _ = out
    return obs, state, reward, terminated | truncated
  obs, state, reward, done, _ = out
  return obs, state, reward, done


def episode_return(env, env_params, act, params, key: jax.Array) -> jax.Array:
  """The undiscounted return of one episode of any gymnax environment from
  ``key``, acting with ``act(params, obs)``: the sum of the rewards up to the
  first termination or truncation (a ``lax.scan`` over the horizon)."""
  reset_key, step_key = jax.random.split(key)
  obs, state = env.reset(reset_key, env_params)

  def body(carry, k):
    obs, state, ret, done = carry
    obs, state, reward, finished = env_step(env, k, state, act(params, obs), env_params)
    ret = ret + jnp.where(done, 0.0, reward)
    return (obs, state, ret, done | finished), None

  steps = env_params.max_steps_in_episode
  init = (obs, state, jnp.zeros([], jnp.float32), jnp.zeros([], bool))
  (_, _, ret, _), _ = jax.lax.scan(body, init, jax.random.split(step_key, steps))
  return ret


def returns(env, env_params, act, params, keys: jax.Array) -> jax.Array:
  """The returns of the episodes from ``keys``, vmapped."""
  return jax.vmap(episode_return, in_axes=(None, None, None, None, 0))(
      env, env_params, act, params, keys)


def mean_return(env, env_params, act, params, key: jax.Array, episodes: int) -> jax.Array:
  """The mean return over ``episodes`` episodes, keys ``jax.random.split(key, episodes)``."""
  return jnp.mean(returns(env, env_params, act, params, jax.random.split(key, episodes)))


class CartPoleResult(NamedTuple):
  params: Any  # the trained policy's params
  history: dict  # amc_jax.fit's history (loss = -mean return / 500 on the step's episodes)
  eval_returns: np.ndarray  # returns of the EVAL_EPISODES evaluation episodes
  random_policy_return: float  # mean evaluation return of the initial (random) policy
  seconds: float  # training wall time, compilation included


def train(steps: int = DEFAULT_STEPS, *, seed: int = 0, sigma0: float = DEFAULT_SIGMA0,
          epsilon: float = 0.0, n_reset: int = 50, episodes: int = DEFAULT_EPISODES,
          hidden: int = 16, chunk: int = 50) -> CartPoleResult:
  """Trains the policy with ``amc(sigma0, epsilon, n_reset)`` for ``steps``
  steps on ``episodes`` fresh episodes per step, then evaluates it on
  :data:`EVAL_EPISODES` episodes it never saw (keys from ``seed + 1000``)."""
  env, env_params = environment()
  policy = policy_network(hidden)
  act = greedy(policy)
  params = policy.init(jax.random.key(seed), jnp.zeros(4))
  horizon = float(env_params.max_steps_in_episode)

  def loss(params, key):
    return -mean_return(env, env_params, act, params, key, episodes) / horizon

  evaluate = jax.jit(lambda p, k: returns(env, env_params, act, p, k))
  eval_keys = jax.random.split(jax.random.key(seed + 1000), EVAL_EPISODES)
  random_return = float(jnp.mean(evaluate(params, eval_keys)))
  tx = amc_jax.amc(sigma0, epsilon=epsilon, n_reset=n_reset, seed=seed)
  started = time.perf_counter()
  result = amc_jax.fit(tx, params, loss, steps=steps, key=seed, random_loss=True,
                       chunk=min(chunk, steps), progress=False)
  seconds = time.perf_counter() - started
  eval_returns = np.asarray(evaluate(result.params, eval_keys))
  return CartPoleResult(result.params, result.history, eval_returns, random_return, seconds)


def main(argv: Optional[Sequence[str]] = None) -> CartPoleResult:
  """Command-line entry point: trains, evaluates, prints the solved figure."""
  parser = _cli.parser("amc_jax.examples.cartpole", __doc__, DEFAULT_STEPS)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sigma0", type=float, default=DEFAULT_SIGMA0)
  parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                      help="episodes per loss evaluation")
  args = parser.parse_args(argv)
  amc_jax.use_xla_cpu_workaround()
  r = train(args.steps, seed=args.seed, sigma0=args.sigma0, episodes=args.episodes)
  curve = [round(-float(u) * 500) for u in r.history["loss"]]
  print(f"aMC on CartPole-v1 (gymnax), {args.steps} steps x {args.episodes} episodes,"
        f" {r.seconds:.1f} s (compilation included)")
  print(f"training returns every {args.steps // len(curve)} steps: {curve}")
  mean = float(np.mean(r.eval_returns))
  print(f"mean return over {EVAL_EPISODES} evaluation episodes: {mean:.1f}"
        f" (random initial policy {r.random_policy_return:.1f});"
        f" {'solved' if mean >= SOLVED else 'not solved'} (>= {SOLVED:g})")
  return r


if __name__ == "__main__":
  main()
