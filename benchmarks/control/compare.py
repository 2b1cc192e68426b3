"""Monte Carlo training of controllers against evolution strategies and PPO, on gymnax.

Every method trains the same policy (a flax MLP, obs -> tanh(Dense(16)) ->
Dense(actions), greedy over the logits; for Pendulum-v1 the torque is 2 tanh
of one output) from the same init per seed. The gradient-free methods share
one objective: minus the mean return of ``--episodes`` episodes per
evaluation, the episodes of one step (one generation) sharing their keys
(common random numbers) and every step drawing new ones. Methods:

* ``aMC``: ``amc(sigma0, n_reset=50)`` through ``amc_jax.fit(...,
  random_loss=True)`` (U(x) and U(x') on the same episodes); sigma0 in
  {0.1, 0.3}, the better one chosen per environment on seed 0 (both are
  reported for every seed);
* ``aMC K=4``: ``amc(0.3, num_proposals=4)``;
* ``aMC population M=4``: ``population(amc(0.3, n_reset=50), every=20,
  fraction=0.25)``, 4 chains from the same init on the same episodes, the
  best chain (lowest last loss) evaluated;
* ``metropolis``: ``metropolis(0.1)`` at T = 0;
* evosax 0.3 ``Open_ES`` (``optimizer=optax.adam(0.05)``, std 0.1), ``SNES``,
  ``CMA_ES`` and ``PGPE`` (library defaults), population 16, one ``ask`` /
  ``vmap(fitness)`` / ``tell`` per generation; and ``SNES (evosax example)``
  at the settings of evosax's own gymnax example (examples/02_rl.ipynb:
  population 128, ``optimizer=optax.adamw(0.01)``, 16 episodes per member;
  its observation normalisation is left out, no other method has it). All
  skipped without evosax.
* ``PPO (rejax)``: rejax 0.1 PPO at its published configuration for the
  environment (configs/gymnax/*.yaml; ``normalize_observations`` where the
  config sets it), with the shared policy as its actor (same init; a
  Gaussian head with a learnt log-std for Pendulum-v1, the action clipped to
  [-2, 2] instead of 2 tanh) and rejax's default critic (64, 64, the
  config's activation). Its environment steps are the transitions it
  collects; evaluation is greedy (the mode). Skipped without rejax.

Budget and cost are counted in simulated environment steps: every episode of
the gradient-free methods is a ``lax.scan`` of the environment's full horizon
(gymnax resets a finished episode and its rewards are masked), so one
evaluation costs ``episodes x horizon`` steps whatever the policy does. Each
run stops at ``--budget`` steps; up to ``--rows`` times per run the current
params (aMC: the best chain of a population), the search distribution's mean
(ES) or the greedy actor (PPO) is evaluated on 64 fixed evaluation episodes
the training never sees. Reported: the evaluation return against environment
steps and wall seconds (evaluation excluded, compilation included), the
environment steps and seconds at which the evaluation first reaches the
environment's threshold (CartPole-v1 475, Acrobot-v1 -100, MountainCar-v0
-110, Pendulum-v1 -200; none for Breakout-MinAtar), and per budget
(environment steps, seconds) the median evaluation return of every method
and which is ahead. Results resume per (environment, method, seed).

One MinAtar game, Breakout-MinAtar (10x10x4 binary observations, flattened
into the same 16-unit policy; 1000-step episodes), on the same 8M steps:
that is far below what MinAtar agents usually train for, MinAtar has no
agreed "solved" return (the budget tables only), and rejax publishes no
gymnax MinAtar configuration for PPO (no PPO rows there). CMA-ES runs only
on policies of up to ``CMA_MAX_PARAMS`` parameters: its full covariance (d x
d, decomposed every generation) is out of reach at Breakout's d = 6467.

  python -m benchmarks.control.compare --out-dir benchmarks/results
  python -m benchmarks.control.compare --quick
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Callable, NamedTuple

import numpy as np

from benchmarks import _common

NAME = "control"
ENVS = {  # name: (threshold, budget in environment steps)
    "CartPole-v1": (475.0, 8_000_000),
    "Acrobot-v1": (-100.0, 8_000_000),
    "MountainCar-v0": (-110.0, 8_000_000),
    "Pendulum-v1": (-200.0, 8_000_000),
    # MinAtar has no agreed "solved" return: budget tables only.
    "Breakout-MinAtar": (None, 8_000_000),
}
AMC_SIGMAS = (0.1, 0.3)
ES_METHODS = ("OpenES", "SNES", "CMA-ES", "PGPE")
ES_EXAMPLE = "SNES (evosax example)"  # evosax examples/02_rl.ipynb
EXAMPLE_POPULATION, EXAMPLE_EPISODES = 128, 16
EVAL_EPISODES = 64
POPULATION = 16
CHAINS = 4  # aMC population
# CMA-ES keeps a full d x d covariance and decomposes it every generation: on
# Breakout-MinAtar's 6467 params its first 0.4M-step row had not come after
# 4 minutes, so it runs only on policies up to this size.
CMA_MAX_PARAMS = 2_000
PPO = "PPO (rejax)"
# rejax's published PPO configurations (keraJLi/rejax configs/gymnax/*.yaml,
# the ppo section; total_timesteps and eval_freq are this benchmark's).
_PPO_COMMON = dict(gae_lambda=0.95, clip_eps=0.2, vf_coef=0.5, gamma=0.99)
PPO_CONFIGS = {
    "CartPole-v1": dict(_PPO_COMMON, activation="tanh", num_envs=5, num_steps=100,
                        num_epochs=5, num_minibatches=5, learning_rate=7.5e-4,
                        max_grad_norm=0.5, ent_coef=0.01),
    "Acrobot-v1": dict(_PPO_COMMON, activation="tanh", num_envs=5, num_steps=100,
                       num_epochs=5, num_minibatches=5, learning_rate=7.5e-4,
                       max_grad_norm=0.5, ent_coef=0.01, normalize_observations=True),
    "MountainCar-v0": dict(_PPO_COMMON, activation="tanh", num_envs=10, num_steps=20,
                           num_epochs=5, num_minibatches=5, learning_rate=2.5e-4,
                           max_grad_norm=0.5, ent_coef=0.0, gae_lambda=0.98),
    "Pendulum-v1": dict(_PPO_COMMON, activation="swish", num_envs=100, num_steps=100,
                        num_epochs=10, num_minibatches=10, learning_rate=1e-3,
                        max_grad_norm=10.0, ent_coef=0.0, gamma=0.995,
                        normalize_observations=True),
}
STEP_BUDGETS = (1e6, 2e6, 4e6, 8e6)
SECOND_BUDGETS = (1.0, 3.0, 10.0, 30.0, 100.0)


def parse_args(argv=None):
  p = _common.parser(__doc__, quick="smoke test: CartPole only, tiny budget, one seed",
                     resumable=True)
  p.add_argument("--envs", nargs="+", choices=list(ENVS), default=None)
  p.add_argument("--seeds", type=int, default=None, help="(full 3, quick 1)")
  p.add_argument("--episodes", type=int, default=8, help="episodes per evaluation")
  p.add_argument("--budget", type=float, default=None,
                 help="environment steps per run (default per environment; quick 2e5)")
  p.add_argument("--rows", type=int, default=None, help="evaluations per run (full 20, quick 3)")
  args = p.parse_args(argv)
  quick = args.quick
  args.envs = args.envs or (["CartPole-v1"] if quick else list(ENVS))
  args.seeds = args.seeds or (1 if quick else 3)
  args.rows = args.rows or (3 if quick else 20)
  return args


class Problem(NamedTuple):
  """One environment, as every method sees it."""

  env_name: str
  init: Callable  # init(seed) -> params of the shared policy
  loss: Callable  # loss(params, key, episodes) = -mean return of `episodes` episodes
  evaluate: Callable  # evaluate(params) -> mean return on the fixed evaluation episodes
  evaluate_with: Callable  # evaluate_with(act, params): the same with another act(params, obs)
  horizon: int
  size: int  # parameters of the policy


def make_problem(env_name: str) -> Problem:
  import gymnax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from amc_jax.examples import cartpole  # pylint: disable=import-outside-toplevel

  env, env_params = gymnax.make(env_name)
  space = env.action_space(env_params)
  discrete = hasattr(space, "n")
  obs_dim = int(np.prod(env.observation_space(env_params).shape))  # MinAtar: 10x10xC
  policy = cartpole.policy_network(16, int(space.n) if discrete else 1)

  def act(params, obs):
    out = policy.apply(params, jnp.ravel(obs).astype(jnp.float32))
    return jnp.argmax(out) if discrete else float(space.high) * jnp.tanh(out)

  def loss(params, key, episodes):
    return -cartpole.mean_return(env, env_params, act, params, key, episodes)

  init = lambda seed: policy.init(jax.random.key(seed), jnp.zeros(obs_dim))
  eval_key = jax.random.key(10_000)
  evaluate_with = jax.jit(
      lambda act, p: cartpole.mean_return(env, env_params, act, p, eval_key, EVAL_EPISODES),
      static_argnums=0)
  size = sum(x.size for x in jax.tree.leaves(jax.eval_shape(init, 0)))
  return Problem(env_name, init, loss, lambda p: evaluate_with(act, p), evaluate_with,
                 int(env_params.max_steps_in_episode), size)


def schedule(budget: int, rows: int, per_unit: int) -> tuple[int, int]:
  """``(rows, units per row)``: whole units (steps, generations, PPO
  iterations) of ``per_unit`` environment steps within ``budget``, evaluated
  at most ``rows`` times (at least one unit)."""
  units = max(budget // per_unit, 1)
  rows = min(rows, units)
  return rows, units // rows


def record_run(advance, current, carry, evaluate, rows, steps_per_row):
  """Run ``rows`` times ``carry = advance(carry)`` (timed) and evaluate
  ``current(carry)`` after each (not timed): the run's curves."""
  import jax  # pylint: disable=import-outside-toplevel

  out = {"env_steps": [0], "seconds": [0.0], "eval_return": [float(evaluate(current(carry)))]}
  seconds = 0.0
  for _ in range(rows):
    t0 = time.perf_counter()
    carry = jax.block_until_ready(advance(carry))
    seconds += time.perf_counter() - t0
    out["env_steps"].append(out["env_steps"][-1] + steps_per_row)
    out["seconds"].append(seconds)
    out["eval_return"].append(float(evaluate(current(carry))))
  return out


def run_amc(problem, tx, seed, budget, rows, episodes, evals_per_step, chains=None):
  """aMC / Metropolis through ``amc_jax.fit(random_loss=True)``; with
  ``chains``, a coupled population (params with a chain axis, all from the
  seed's init), its best chain evaluated."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  import amc_jax  # pylint: disable=import-outside-toplevel

  loss = lambda p, k: problem.loss(p, k, episodes)
  params = problem.init(seed)
  if chains:
    params = jax.tree.map(lambda x: jnp.broadcast_to(x, (chains, *x.shape)), params)
  per_step = (chains or 1) * evals_per_step * episodes * problem.horizon
  rows, steps = schedule(budget, rows, per_step)

  def advance(carry):
    params, state, _ = carry
    r = amc_jax.fit(tx, params, loss, steps=steps, key=seed, opt_state=state, random_loss=True,
                    chunk=steps, progress=False, donate=True)
    return r.params, r.opt_state, r.best_chain

  def current(carry):
    params, _, best = carry
    return params if best is None else amc_jax.select_chain(params, best)

  carry = (params, None, 0 if chains else None)
  return record_run(advance, current, carry, problem.evaluate, rows, steps * per_step)


def make_es(kind, params):
  """An evosax 0.3 strategy for ``params`` (the mean starts there), the
  episodes per member, and its call as text."""
  import optax  # pylint: disable=import-outside-toplevel
  from evosax.algorithms import (  # pylint: disable=import-outside-toplevel
      CMA_ES, PGPE, SNES, Open_ES)

  if kind == "OpenES":
    es = Open_ES(POPULATION, params, optimizer=optax.adam(0.05),
                 std_schedule=optax.constant_schedule(0.1))
    return es, None, f"Open_ES({POPULATION}, optimizer=adam(0.05), std_schedule=constant(0.1))"
  if kind == ES_EXAMPLE:
    es = SNES(EXAMPLE_POPULATION, params, optimizer=optax.adamw(learning_rate=0.01))
    return es, EXAMPLE_EPISODES, (f"SNES({EXAMPLE_POPULATION}, optimizer=adamw(0.01)),"
                                  f" {EXAMPLE_EPISODES} episodes per member")
  make = {"SNES": SNES, "CMA-ES": CMA_ES, "PGPE": PGPE}[kind]
  return make(POPULATION, params), None, f"{make.__name__}({POPULATION}) defaults"


def run_es(problem, kind, seed, budget, rows, episodes):
  """An evosax strategy: per generation, every member on the same episodes."""
  import jax  # pylint: disable=import-outside-toplevel

  params = problem.init(seed)
  es, own_episodes, call = make_es(kind, params)
  episodes = own_episodes or episodes
  es_params = es.default_params
  per_gen = es.population_size * episodes * problem.horizon
  rows, gens = schedule(budget, rows, per_gen)

  def generation(_, carry):
    state, key = carry
    key, k_ask, k_tell, k_episodes = jax.random.split(key, 4)
    population, state = es.ask(k_ask, state, es_params)
    fitness = jax.vmap(problem.loss, in_axes=(0, None, None))(population, k_episodes, episodes)
    state, _ = es.tell(k_tell, population, fitness, state, es_params)
    return state, key

  advance = jax.jit(lambda carry: jax.lax.fori_loop(0, gens, generation, carry))
  key = jax.random.key(seed)
  carry = (es.init(jax.random.fold_in(key, 1), params, es_params), key)
  out = record_run(advance, lambda c: es.get_mean(c[0]), carry, problem.evaluate, rows,
                   gens * per_gen)
  out["call"] = call
  return out


class _FiveTupleStep:
  """A gymnax environment with the 0.0.x ``step`` rejax 0.1 reads:
  ``(obs, state, reward, done, info)``, ``done`` = terminated or truncated
  (gymnax 1.0 returns both; 0.0.x passes through)."""

  def __init__(self, env):
    self.env = env

  def __getattr__(self, name):
    if name.startswith("__") or name == "env":  # copy/deepcopy before __init__
      raise AttributeError(name)
    return getattr(self.env, name)

  def step(self, key, state, action, params):
    out = self.env.step(key, state, action, params)
    if len(out) == 5:
      return out
    obs, state, reward, terminated, truncated, info = out
    return obs, state, reward, terminated | truncated, info

  def reset(self, key, params):
    return self.env.reset(key, params)


def make_ppo(env_name: str, steps_per_row: int):
  """rejax PPO at its published configuration for ``env_name``, the shared
  policy as its actor, training ``steps_per_row`` steps per ``train`` call."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import gymnax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import rejax  # pylint: disable=import-outside-toplevel
  from rejax.networks import VNetwork  # pylint: disable=import-outside-toplevel

  config = dict(PPO_CONFIGS[env_name])
  activation = config.pop("activation")
  env, env_params = gymnax.make(env_name)
  ppo = rejax.PPO.create(env=_FiveTupleStep(env), env_params=env_params,
                         agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (16,)},
                         total_timesteps=steps_per_row, eval_freq=steps_per_row,
                         skip_initial_evaluation=True, **config)
  return ppo.replace(critic=VNetwork(hidden_layer_sizes=(64, 64),
                                     activation=getattr(nn, activation)),
                     eval_callback=lambda algo, ts, rng: jnp.zeros(()))


def run_ppo(problem, seed, budget, rows):
  """rejax PPO from the seed's init of the shared policy; the greedy actor evaluated."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  config = PPO_CONFIGS[problem.env_name]
  per_iteration = config["num_envs"] * config["num_steps"]
  rows, iterations = schedule(budget, rows, per_iteration)
  per_row = iterations * per_iteration
  ppo = make_ppo(problem.env_name, per_row)
  ts = ppo.init_state(jax.random.key(seed))
  ours = problem.init(seed)["params"]  # Dense_1: obs -> hidden, Dense_0: hidden -> out
  actor = dict(ts.actor_ts.params["params"])
  actor["features"] = {"Dense_0": ours["Dense_1"]}
  actor["action_logits" if ppo.discrete else "action_mean"] = ours["Dense_0"]
  ts = ts.replace(actor_ts=ts.actor_ts.replace(params={"params": actor}))

  def act(carry, obs):
    params, rms = carry
    if ppo.normalize_observations:
      obs = ppo.normalize_obs(rms, obs)
    mode = ppo.actor.apply(params, obs[None], method="_action_dist").mode()[0]
    if ppo.discrete:
      return mode
    space = ppo.env.action_space(ppo.env_params)
    return jnp.clip(mode, space.low, space.high)

  train = jax.jit(lambda ts: ppo.train(train_state=ts)[0])
  return record_run(train, lambda ts: (ts.actor_ts.params, ts.obs_rms_state),
                    ts, lambda p: problem.evaluate_with(act, p), rows, per_row)


def solved_at(run, threshold):
  """(environment steps, seconds) of the first evaluation at or above
  ``threshold`` (never for an environment without one)."""
  if threshold is None:
    return None, None
  for steps, secs, ret in zip(run["env_steps"], run["seconds"], run["eval_return"]):
    if ret >= threshold:
      return steps, secs
  return None, None


def methods():
  """The method names and how to run each: aMC variants, Metropolis, the ES, PPO."""
  import amc_jax  # pylint: disable=import-outside-toplevel

  out = {f"aMC sigma0 {s:g}": ("amc", lambda seed, s=s: amc_jax.amc(s, n_reset=50, seed=seed), 2)
         for s in AMC_SIGMAS}
  out["aMC K=4"] = ("amc", lambda seed: amc_jax.amc(0.3, n_reset=50, num_proposals=4,
                                                    seed=seed), 5)
  out[f"aMC population M={CHAINS}"] = ("population", lambda seed: amc_jax.population(
      amc_jax.amc(0.3, n_reset=50, seed=seed), every=20, fraction=0.25, seed=seed), 2)
  out["metropolis"] = ("amc", lambda seed: amc_jax.metropolis(0.1, seed=seed), 2)
  try:
    import evosax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    out.update({kind: ("es", kind, None) for kind in (*ES_METHODS, ES_EXAMPLE)})
  except ImportError:
    print("evosax is not importable (pip install 'amc_jax[evosax]'): no ES rows")
  try:
    with warnings.catch_warnings():  # tfp (under distrax) reads deprecated jax.core names
      warnings.simplefilter("ignore", DeprecationWarning)
      import rejax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    out[PPO] = ("ppo", None, None)
  except (ImportError, AttributeError) as e:  # AttributeError: a jax that removed them
    print(f"rejax is not importable ({e!r}; pip install 'amc_jax[rl]'): no PPO rows")
  return out


def run_one(problem, kind, make, evals, seed, budget, args):
  if kind in ("amc", "population"):
    return run_amc(problem, make(seed), seed, budget, args.rows, args.episodes, evals,
                   chains=CHAINS if kind == "population" else None)
  if kind == "es":
    return run_es(problem, make, seed, budget, args.rows, args.episodes)
  return run_ppo(problem, seed, budget, args.rows)


def run_all(args, record):
  groups = record.setdefault("runs", {})
  for env_name in args.envs:
    threshold, budget = ENVS[env_name]
    budget = int(args.budget or (2e5 if args.quick else budget))
    problem = make_problem(env_name)
    for name, (kind, make, evals) in methods().items():
      if kind == "ppo" and env_name not in PPO_CONFIGS:
        print(f"{env_name}: rejax publishes no PPO configuration for it; no PPO rows")
        continue
      if name == "CMA-ES" and problem.size > CMA_MAX_PARAMS:
        print(f"{env_name}: {problem.size} params, over CMA_MAX_PARAMS; no CMA-ES rows")
        continue
      for seed in range(args.seeds):
        key = f"{env_name} | {name} | {seed}"
        if key in groups:
          continue
        run = run_one(problem, kind, make, evals, seed, budget, args)
        run["solved_at"] = solved_at(run, threshold)
        groups[key] = run
        print(f"{key:40s} final eval {run['eval_return'][-1]:8.1f}  solved at"
              f" {run['solved_at'][0]} steps / {run['seconds'][-1]:.1f} s total", flush=True)
        _common.write_json(args.out_dir / f"{NAME}_partial.json", _common.jsonable(record))
  return groups


def _by_method(record, env_name):
  rows = {}
  for key, run in record["runs"].items():
    env, name, _ = key.split(" | ")
    if env == env_name:
      rows.setdefault(name, []).append(run)
  return rows


def ahead(runs_by_method, axis, budgets):
  """Per budget (environment steps or seconds): every method's median
  evaluation return at its last evaluation within the budget (``*``: a run
  ended earlier), and the method ahead."""
  table = []
  for b in budgets:
    medians, early = _common.medians_at(runs_by_method, b, lambda r: r[axis],
                                        lambda r: r["eval_return"])
    row = {"budget": b, "median_return": medians, "ended_early": early}
    scored = {m: v for m, v in medians.items() if v is not None}
    top = max(scored.values(), default=None)
    leaders = [m for m, v in scored.items() if v == top]
    row["ahead"] = (leaders[0] if len(leaders) == 1 else " = ".join(leaders)
                    if len(leaders) <= 3 else f"{len(leaders)}-way tie")
    table.append(row)
  return table


def summarise(record, envs):
  """Per environment and method: median final return, runs solved, median steps
  and seconds to the threshold (over the runs that reached it), the aMC
  sigma0 better on seed 0, and the per-budget "who is ahead" tables."""
  table = {}
  for env_name in envs:
    threshold = ENVS[env_name][0]
    rows = _by_method(record, env_name)
    seed0 = {s: rows.get(f"aMC sigma0 {s:g}", [{}])[0] for s in AMC_SIGMAS}
    best = max(AMC_SIGMAS, key=lambda s: (seed0[s].get("solved_at", [None])[0] is not None,
                                          -(seed0[s].get("solved_at", [None])[0] or 0),
                                          seed0[s].get("eval_return", [-np.inf])[-1]))
    summary = {}
    for name, runs in rows.items():
      hits = [r["solved_at"] for r in runs if r["solved_at"][0] is not None]
      summary[name] = {
          "final_return_median": float(np.median([r["eval_return"][-1] for r in runs])),
          "solved": f"{len(hits)}/{len(runs)}" if threshold is not None else "n/a",
          "steps_to_threshold_median": float(np.median([h[0] for h in hits])) if hits else None,
          "seconds_to_threshold_median": float(np.median([h[1] for h in hits])) if hits else None,
          "env_steps": max(r["env_steps"][-1] for r in runs),
          "seconds_median": float(np.median([r["seconds"][-1] for r in runs])),
      }
    top = max(r["env_steps"][-1] for runs in rows.values() for r in runs)
    table[env_name] = {
        "threshold": threshold, "aMC_best_sigma0_on_seed0": best, "methods": summary,
        "ahead_by_env_steps": ahead(rows, "env_steps",
                                    [b for b in STEP_BUDGETS if b <= top] or [top]),
        "ahead_by_seconds": ahead(rows, "seconds", SECOND_BUDGETS),
    }
  return table


def _millions(x):
  return "-" if x is None else f"{x / 1e6:.2f}M"


def format_tables(table) -> str:
  """Per environment, as markdown (RESULTS.md and the console): the
  threshold table, and who is ahead per budget (columns: environment steps,
  then seconds; a cell is the median evaluation return, * = a run ended
  before the budget, **bold** = ahead)."""
  lines = []
  for env_name, t in table.items():
    bar = "no threshold" if t["threshold"] is None else f"threshold {t['threshold']:g}"
    lines += ["", f"{env_name} ({bar}; aMC's sigma0 chosen on seed 0:"
              f" {t['aMC_best_sigma0_on_seed0']:g})", "",
              "| method | median final return | solved | median env steps to threshold"
              " | median seconds to threshold |", "| --- | --- | --- | --- | --- |"]
    for name, m in t["methods"].items():
      secs = m["seconds_to_threshold_median"]
      lines.append(f"| {name} | {m['final_return_median']:.1f} | {m['solved']} |"
                   f" {_millions(m['steps_to_threshold_median'])} |"
                   f" {'-' if secs is None else f'{secs:.1f}'} |")
    budgets = [("ahead_by_env_steps", row, f"{row['budget'] / 1e6:g}M steps")
               for row in t["ahead_by_env_steps"]]
    budgets += [("ahead_by_seconds", row, f"{row['budget']:g} s") for row in t["ahead_by_seconds"]]
    lines += ["", f"{env_name}: median evaluation return at a budget",
              "", "| method | " + " | ".join(label for _, _, label in budgets) + " |",
              "| --- " * (len(budgets) + 1) + "|"]
    for name in t["methods"]:
      cells = []
      for _, row, _ in budgets:
        v = row["median_return"][name]
        cell = "-" if v is None else f"{v:.1f}" + ("*" if row["ended_early"][name] else "")
        cells.append(f"**{cell}**" if name in row["ahead"].split(" = ") else cell)
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| ahead | " + " | ".join(row["ahead"] for _, row, _ in budgets) + " |")
  return "\n".join(lines)


def plot(record, path):
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  envs = list(record["table"])
  fig, axes = plt.subplots(2, len(envs), figsize=(4.2 * len(envs), 7), squeeze=False)
  for j, env_name in enumerate(envs):
    for key, run in record["runs"].items():
      env, name, seed = key.split(" | ")
      if env != env_name:
        continue
      names = sorted({k.split(" | ")[1] for k in record["runs"]})
      color = plt.get_cmap("tab20")(names.index(name) % 20)
      for i, x in enumerate(("env_steps", "seconds")):
        axes[i][j].plot(run[x], run["eval_return"], color=color, lw=0.9,
                        label=name if seed == "0" else None)
    for i, x in enumerate(("environment steps", "wall seconds (evaluation excluded)")):
      if record["table"][env_name]["threshold"] is not None:
        axes[i][j].axhline(record["table"][env_name]["threshold"], color="0.5", ls=":")
      axes[i][j].set(xlabel=x, ylabel="evaluation return", title=env_name)
      axes[i][j].grid(alpha=0.3)
    axes[1][j].set_xscale("symlog", linthresh=1.0)  # PPO's runs are 10x longer
    axes[1][j].set_xlim(left=0)
  axes[0][0].legend(fontsize=7)
  fig.suptitle("controllers: evaluation return (64 fixed episodes), each seed one line")
  _common.save_figure(fig, path)


def main(argv=None):
  args = parse_args(argv)
  if _common.replot(args.plot_from, plot):
    return None
  partial = args.out_dir / f"{NAME}_partial.json"
  run = _common.start(args)
  record = {} if args.fresh or not partial.exists() else json.loads(partial.read_text())
  record["config"] = {k: v for k, v in vars(args).items()
                      if k not in ("out_dir", "fresh", "no_plot", "plot_from")}
  record["command"] = _common.command()
  record["load_average_start"] = run.load_start
  run_all(args, record)
  record["table"] = summarise(record, args.envs)
  record["wall_s_this_invocation"] = run()
  _common.write_and_plot(args.out_dir, NAME, record, plot, args.no_plot)
  partial.unlink(missing_ok=True)
  print(format_tables(record["table"]))
  return record


if __name__ == "__main__":
  main()
