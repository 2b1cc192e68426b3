"""The examples in amc_jax/examples, run at a small size."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amc_jax.examples import rosenbrock
from amc_jax.examples import sine

# f at the start (-2, 2) of Fig. 3: (1 + 2)^2 + 100 (2 - 4)^2.
_F_START = 409.0


def test_sine_train_small():
  result = sine.train(steps=400, chunk=200, seed=0, log=None)
  state, history = result.state, result.history

  assert int(state.count) == 400
  np.testing.assert_array_equal(history["step"], [200, 400])
  # A net of N(0, 0.01^2) params predicts ~0, so U starts at mean(sin^2) = 1/2.
  assert result.initial_loss == pytest.approx(0.5, abs=0.01)
  # At T = 0 in batch mode the loss can never go up.
  assert np.all(np.diff(history["loss"]) <= 0)
  assert history["loss"][-1] < 0.5 * result.initial_loss
  rate = int(state.n_accept) / int(state.count)
  assert 0 < rate < 1
  assert np.all((history["acceptance"] >= 0) & (history["acceptance"] <= 1))
  # The cached loss is the loss of the returned params.
  theta, target = sine.make_data()
  np.testing.assert_allclose(
      float(state.loss), float(sine.make_loss(theta, target)(result.params)), rtol=1e-5
  )
  chex.assert_trees_all_equal_shapes_and_dtypes(
      result.params, sine.init_params(jax.random.key(0))
  )
  assert result.steps_per_second > 0


def test_sine_last_chunk_takes_the_remainder():
  result = sine.train(steps=250, chunk=100, log=None)
  assert int(result.state.count) == 250
  np.testing.assert_array_equal(result.history["step"], [100, 200, 250])


def test_sine_main_prints_summary(capsys):
  result = sine.main(["--steps", "200", "--chunk", "100", "--seed", "1"])
  out = capsys.readouterr().out
  assert int(result.state.count) == 200
  assert "final loss:" in out
  assert "acceptance rate:" in out
  assert "steps/second:" in out


def test_sine_runs_as_a_module():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the module must set its workaround itself
  proc = subprocess.run(
      [sys.executable, "-W", "error", "-m", "amc_jax.examples.sine",
       "--steps", "400", "--chunk", "200"],
      capture_output=True,
      text=True,
      env=env,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  final = [line for line in lines if line.startswith("final loss:")]
  assert len(final) == 1, proc.stdout
  assert float(final[0].split()[2]) < 0.5
  assert any(line.startswith("steps/second:") for line in lines)
  assert sum(line.startswith("step ") for line in lines) == 2


def test_rosenbrock_small_runs_in_float32():
  result = rosenbrock.run(steps=200, epsilons=(0.0, 0.1), n_seeds=2)
  assert result.f.shape == (2, 2, 201)
  assert result.f.dtype == np.float32
  np.testing.assert_allclose(result.f[:, :, 0], _F_START)
  assert np.all(result.f[:, :, -1] < _F_START)
  # At T = 0 every chain's f is non-increasing.
  assert np.all(np.diff(result.f, axis=-1) <= 0)
  for state in result.states:
    np.testing.assert_array_equal(state.count, [200, 200])


def test_rosenbrock_epsilon_speeds_convergence(x64):
  del x64
  result = rosenbrock.run(steps=3000)
  assert result.f.dtype == np.float64
  final = result.f[:, :, -1]  # [epsilon, chain]
  assert result.epsilons == (0.0, 0.01, 0.1)
  # Measured over 20 chains at 3000 steps: epsilon = 0 ends in [5.1, 5.4],
  # 0.01 in [0.27, 0.78], 0.1 in [1e-11, 2e-7]; the bounds leave wide margins.
  assert np.all(final[0] > 1.0)
  assert np.all(final[2] < 1e-3)
  assert np.all(final[2] < final[1].min()) and np.all(final[1] < final[0].min())
  # The final params are the params whose f was recorded last. Near (1, 1),
  # y - x^2 cancels to ~1e-6, so an eager recomputation differs from the
  # fused, jitted one in the last ~5 of 16 digits.
  f_params = jax.vmap(jax.vmap(rosenbrock.rosenbrock))(jnp.asarray(result.final_params))
  np.testing.assert_allclose(np.asarray(f_params), final, rtol=1e-6)


def test_rosenbrock_main_prints_table(x64, capsys):
  del x64
  result = rosenbrock.main(["--steps", "300", "--seeds", "2"])
  out = capsys.readouterr().out
  assert result.f.shape == (3, 2, 301)
  assert "final f (median over chains):" in out
  for eps in ("0", "0.01", "0.1"):
    assert f"epsilon = {eps} " in out
  # main switched x64 on; the fixture switches it back off after the test.
  assert jax.config.jax_enable_x64


def test_cartpole_main_learns_well_above_a_random_policy(capsys):
  """CartPole-v1 (gymnax) in a quick configuration: 100 aMC steps on the
  return of 16 episodes each lift the mean evaluation return from the random
  initial policy's (under 10 for seed 0) to near the maximum (495 of 500
  when written); the full example (1000 steps) is solved on every seed we ran."""
  pytest.importorskip("gymnax")
  from amc_jax.examples import cartpole

  # gymnax's CartPole mixes Python floats and int32 arrays: JAX's standard
  # promotion, as a user has it (the suite runs under strict promotion).
  with jax.numpy_dtype_promotion("standard"):
    r = cartpole.main(["--steps", "100"])
  mean = float(np.mean(r.eval_returns))
  assert r.random_policy_return < 50
  assert mean > 200 and mean > 5 * r.random_policy_return, (mean, r.random_policy_return)
  assert len(r.eval_returns) == cartpole.EVAL_EPISODES
  assert np.all((r.eval_returns >= 1) & (r.eval_returns <= 500))
  assert "mean return over 100 evaluation episodes" in capsys.readouterr().out


def test_cartpole_without_gymnax_says_what_to_install(monkeypatch):
  import builtins

  from amc_jax.examples import cartpole

  real_import = builtins.__import__

  def no_gymnax(name, *args, **kwargs):
    if name == "gymnax":
      raise ImportError("No module named 'gymnax'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_gymnax)
  with pytest.raises(ImportError, match=r"amc_jax\[control\]"):
    cartpole.environment()


def test_cartpole_env_step_reads_both_gymnax_step_apis():
  """gymnax 1.0 steps return (obs, state, reward, terminated, truncated,
  info), 0.0.x (obs, state, reward, done, info): env_step gives done =
  terminated or truncated for both (reading the 6-tuple as 0.0.x's, the
  wrong variant, fails to unpack)."""
  from amc_jax.examples import cartpole

  class New:
    def step(self, key, state, action, params):
      return "o", state + 1, 1.0, jnp.array(False), jnp.array(action == 1), {}

  class Old:
    def step(self, key, state, action, params):
      return "o", state + 1, 1.0, jnp.array(action == 1), {}

  for env in (New(), Old()):
    for action, done in ((0, False), (1, True)):
      obs, state, reward, finished = cartpole.env_step(env, None, 0, action, None)
      assert (obs, state, reward, bool(finished)) == ("o", 1, 1.0, done)
  with pytest.raises(ValueError, match="too many values to unpack"):
    obs, state, reward, done, _ = New().step(None, 0, 1, None)  # 0.0.x's reading
