"""Monte Carlo training of controllers against evolution strategies, on gymnax.

Every method trains the same policy (a flax MLP, obs -> tanh(Dense(16)) ->
Dense(actions), greedy over the logits; for Pendulum-v1 the torque is 2 tanh
of one output) from the same init per seed, on the same objective: minus the
mean return of ``--episodes`` episodes per evaluation, the episodes of one
step (one generation) sharing their keys (common random numbers) and every
step drawing new ones. Methods:

* ``aMC``: ``amc(sigma0, n_reset=50)`` through ``amc_jax.fit(...,
  random_loss=True)`` (U(x) and U(x') on the same episodes); sigma0 in
  {0.1, 0.3}, the better one chosen per environment on seed 0 (both are
  reported for seed 0);
* ``aMC K=4``: ``amc(0.3, num_proposals=4)``;
* ``metropolis``: ``metropolis(0.1)`` at T = 0;
* evosax 0.3 ``Open_ES`` (``optimizer=optax.adam(0.05)``, std 0.1), ``SNES``,
  ``CMA_ES`` and ``PGPE`` (library defaults), population 16, one ``ask`` /
  ``vmap(fitness)`` / ``tell`` per generation (skipped without evosax).

Budget and cost are counted in simulated environment steps: every episode is
a ``lax.scan`` of the environment's full horizon (gymnax resets a finished
episode and its rewards are masked), so one evaluation costs ``episodes x
horizon`` steps whatever the policy does. Each run stops at ``--budget``
steps; every ``budget / rows`` steps the current params (aMC) or the search
distribution's mean (ES) is evaluated on 64 fixed evaluation episodes the
training never sees. Reported: the evaluation return against environment
steps and wall seconds (evaluation excluded, compilation included), and the
environment steps and seconds at which the evaluation first reaches the
environment's threshold (CartPole-v1 475, Acrobot-v1 -100, MountainCar-v0
-110, Pendulum-v1 -200). Results resume per (environment, method, seed).

Not here (yet): PPO (rejax), MinAtar, ``population``, evosax's own example
settings per task.

  python -m benchmarks.control.compare --out-dir benchmarks/results
  python -m benchmarks.control.compare --quick
"""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks import _common

NAME = "control"
ENVS = {  # name: (threshold, budget in environment steps)
    "CartPole-v1": (475.0, 8_000_000),
    "Acrobot-v1": (-100.0, 8_000_000),
    "MountainCar-v0": (-110.0, 8_000_000),
    "Pendulum-v1": (-200.0, 8_000_000),
}
AMC_SIGMAS = (0.1, 0.3)
ES_METHODS = ("OpenES", "SNES", "CMA-ES", "PGPE")
EVAL_EPISODES = 64
POPULATION = 16


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


def make_problem(env_name: str, episodes: int):
  """``(init(seed) -> params, loss(params, key), evaluate(params) -> mean return, horizon)``."""
  import gymnax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from amc_jax.examples import cartpole  # pylint: disable=import-outside-toplevel

  env, env_params = gymnax.make(env_name)
  horizon = int(env_params.max_steps_in_episode)
  space = env.action_space(env_params)
  discrete = hasattr(space, "n")
  outputs = int(space.n) if discrete else 1
  obs_dim = env.observation_space(env_params).shape[0]

  policy = cartpole.policy_network(16, outputs)

  def act(params, obs):
    out = policy.apply(params, obs)
    return jnp.argmax(out) if discrete else float(space.high) * jnp.tanh(out)

  def mean_return(params, key, n):
    return cartpole.mean_return(env, env_params, act, params, key, n)

  def loss(params, key):
    return -mean_return(params, key, episodes)

  eval_key = jax.random.key(10_000)
  evaluate = jax.jit(lambda p: mean_return(p, eval_key, EVAL_EPISODES))
  init = lambda seed: policy.init(jax.random.key(seed), jnp.zeros(obs_dim))
  return init, loss, evaluate, horizon


def run_amc(problem, tx, seed, budget, rows, episodes, evals_per_step):
  """aMC / Metropolis through ``amc_jax.fit(random_loss=True)``, ``rows`` segments."""
  import jax  # pylint: disable=import-outside-toplevel

  import amc_jax  # pylint: disable=import-outside-toplevel

  init, loss, evaluate, horizon = problem
  per_step = evals_per_step * episodes * horizon
  steps_per_row = max(int(budget / rows / per_step), 1)
  params, state, seconds = init(seed), None, 0.0
  out = {"env_steps": [0], "seconds": [0.0], "eval_return": [float(evaluate(params))]}
  for _ in range(rows):
    t0 = time.perf_counter()
    r = amc_jax.fit(tx, params, loss, steps=steps_per_row, key=seed, opt_state=state,
                    random_loss=True, chunk=steps_per_row, progress=False, donate=True)
    params, state = r.params, r.opt_state
    jax.block_until_ready(params)
    seconds += time.perf_counter() - t0
    out["env_steps"].append(out["env_steps"][-1] + steps_per_row * per_step)
    out["seconds"].append(seconds)
    out["eval_return"].append(float(evaluate(params)))
  return out


def make_es(kind, params):
  """An evosax 0.3 strategy for ``params`` (the mean starts there) and its call, as text."""
  import optax  # pylint: disable=import-outside-toplevel
  from evosax.algorithms import (  # pylint: disable=import-outside-toplevel
      CMA_ES, PGPE, SNES, Open_ES)

  if kind == "OpenES":
    es = Open_ES(POPULATION, params, optimizer=optax.adam(0.05),
                 std_schedule=optax.constant_schedule(0.1))
    return es, f"Open_ES({POPULATION}, optimizer=adam(0.05), std_schedule=constant(0.1))"
  make = {"SNES": SNES, "CMA-ES": CMA_ES, "PGPE": PGPE}[kind]
  return make(POPULATION, params), f"{make.__name__}({POPULATION}) defaults"


def run_es(problem, kind, seed, budget, rows, episodes):
  """An evosax strategy: per generation, every member on the same episodes."""
  import jax  # pylint: disable=import-outside-toplevel

  init, loss, evaluate, horizon = problem
  params = init(seed)
  es, call = make_es(kind, params)
  es_params = es.default_params
  per_gen = POPULATION * episodes * horizon
  gens_per_row = max(int(budget / rows / per_gen), 1)

  def generation(_, carry):
    state, key = carry
    key, k_ask, k_tell, k_episodes = jax.random.split(key, 4)
    population, state = es.ask(k_ask, state, es_params)
    fitness = jax.vmap(loss, in_axes=(0, None))(population, k_episodes)
    state, _ = es.tell(k_tell, population, fitness, state, es_params)
    return state, key

  advance = jax.jit(lambda carry: jax.lax.fori_loop(0, gens_per_row, generation, carry))
  key = jax.random.key(seed)
  carry = (es.init(jax.random.fold_in(key, 1), params, es_params), key)
  out = {"env_steps": [0], "seconds": [0.0], "eval_return": [float(evaluate(params))],
         "call": call}
  seconds = 0.0
  for _ in range(rows):
    t0 = time.perf_counter()
    carry = jax.block_until_ready(advance(carry))
    seconds += time.perf_counter() - t0
    out["env_steps"].append(out["env_steps"][-1] + gens_per_row * per_gen)
    out["seconds"].append(seconds)
    out["eval_return"].append(float(evaluate(es.get_mean(carry[0]))))
  return out


def solved_at(run, threshold):
  """(environment steps, seconds) of the first evaluation at or above ``threshold``."""
  for steps, secs, ret in zip(run["env_steps"], run["seconds"], run["eval_return"]):
    if ret >= threshold:
      return steps, secs
  return None, None


def methods():
  """The method names and how to run each: aMC variants, Metropolis, the ES."""
  import amc_jax  # pylint: disable=import-outside-toplevel

  out = {f"aMC sigma0 {s:g}": ("amc", lambda seed, s=s: amc_jax.amc(s, n_reset=50, seed=seed), 2)
         for s in AMC_SIGMAS}
  out["aMC K=4"] = ("amc", lambda seed: amc_jax.amc(0.3, n_reset=50, num_proposals=4,
                                                    seed=seed), 5)
  out["metropolis"] = ("amc", lambda seed: amc_jax.metropolis(0.1, seed=seed), 2)
  try:
    import evosax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    out.update({kind: ("es", kind, None) for kind in ES_METHODS})
  except ImportError:
    print("evosax is not importable (pip install 'amc_jax[evosax]'): no ES rows")
  return out


def run_all(args, record):
  groups = record.setdefault("runs", {})
  for env_name in args.envs:
    threshold, budget = ENVS[env_name]
    budget = int(args.budget or (2e5 if args.quick else budget))
    problem = make_problem(env_name, args.episodes)
    for name, (kind, make, evals) in methods().items():
      for seed in range(args.seeds):
        key = f"{env_name} | {name} | {seed}"
        if key in groups:
          continue
        if kind == "amc":
          run = run_amc(problem, make(seed), seed, budget, args.rows, args.episodes, evals)
        else:
          run = run_es(problem, make, seed, budget, args.rows, args.episodes)
        run["solved_at"] = solved_at(run, threshold)
        groups[key] = run
        print(f"{key:40s} final eval {run['eval_return'][-1]:8.1f}  solved at"
              f" {run['solved_at'][0]} steps / {run['seconds'][-1]:.1f} s total", flush=True)
        _common.write_json(args.out_dir / f"{NAME}_partial.json", _common.jsonable(record))
  return groups


def summarise(record, envs):
  """Per environment and method: median final return, runs solved, median steps
  and seconds to the threshold (over the runs that reached it); the aMC row is
  the sigma0 better on seed 0."""
  table = {}
  for env_name in envs:
    threshold = ENVS[env_name][0]
    rows = {}
    for key, run in record["runs"].items():
      env, name, _ = key.split(" | ")
      if env == env_name:
        rows.setdefault(name, []).append(run)
    seed0 = {s: rows.get(f"aMC sigma0 {s:g}", [{}])[0] for s in AMC_SIGMAS}
    best = max(AMC_SIGMAS, key=lambda s: (seed0[s].get("solved_at", [None])[0] is not None,
                                          -(seed0[s].get("solved_at", [None])[0] or 0),
                                          seed0[s].get("eval_return", [-np.inf])[-1]))
    summary = {}
    for name, runs in rows.items():
      hits = [r["solved_at"] for r in runs if r["solved_at"][0] is not None]
      summary[name] = {
          "final_return_median": float(np.median([r["eval_return"][-1] for r in runs])),
          "solved": f"{len(hits)}/{len(runs)}",
          "steps_to_threshold_median": float(np.median([h[0] for h in hits])) if hits else None,
          "seconds_to_threshold_median": float(np.median([h[1] for h in hits])) if hits else None,
      }
    table[env_name] = {"threshold": threshold, "aMC_best_sigma0_on_seed0": best,
                       "methods": summary}
  return table


def plot(record, path):
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  envs = list(record["table"])
  fig, axes = plt.subplots(2, len(envs), figsize=(4.2 * len(envs), 7), squeeze=False)
  for j, env_name in enumerate(envs):
    for key, run in record["runs"].items():
      env, name, seed = key.split(" | ")
      if env != env_name:
        continue
      color = f"C{sorted({k.split(' | ')[1] for k in record['runs']}).index(name) % 10}"
      for i, x in enumerate(("env_steps", "seconds")):
        axes[i][j].plot(run[x], run["eval_return"], color=color, lw=0.9,
                        label=name if seed == "0" else None)
    for i, x in enumerate(("environment steps", "wall seconds (evaluation excluded)")):
      axes[i][j].axhline(record["table"][env_name]["threshold"], color="0.5", ls=":")
      axes[i][j].set(xlabel=x, ylabel="evaluation return", title=env_name)
      axes[i][j].grid(alpha=0.3)
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
  for env_name, t in record["table"].items():
    print(f"\n{env_name} (threshold {t['threshold']:g}; aMC row: sigma0"
          f" {t['aMC_best_sigma0_on_seed0']:g}, chosen on seed 0)")
    for name, m in t["methods"].items():
      print(f"  {name:18s} final {m['final_return_median']:8.1f}  solved {m['solved']}"
            f"  steps {m['steps_to_threshold_median']}  s {m['seconds_to_threshold_median']}")
  return record


if __name__ == "__main__":
  main()
