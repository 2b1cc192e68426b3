"""The probes of ``amc_jax._src.probes``: gradient norms, acceptance by
loss, the loss along a line; against hand computations on the sine net of
test_correspondence.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import amc_jax
from test_correspondence import HIDDEN, X0, data, numpy_gradient, sine_loss


def test_gradient_norm_against_hand_gradient():
  x = np.asarray(jax.random.normal(jax.random.key(1), (3 * HIDDEN,)))
  got = amc_jax.gradient_norm(sine_loss, jnp.asarray(x), data())
  assert float(got) == pytest.approx(np.linalg.norm(numpy_gradient(x)), rel=1e-5)
  traj = np.stack([X0, x, 2 * x])
  along = amc_jax.gradient_norm_along(sine_loss, jnp.asarray(traj), data(), batch_size=2)
  np.testing.assert_allclose(np.asarray(along), [np.linalg.norm(numpy_gradient(v)) for v in traj], rtol=1e-5)
  # An exploding gradient is reported, not raised.
  assert np.isinf(float(amc_jax.gradient_norm(lambda p: jnp.sum(jnp.sqrt(jnp.abs(p))), jnp.zeros(2))))
  with pytest.raises(ValueError, match="leading"):
    amc_jax.gradient_norm_along(sine_loss, {"a": jnp.zeros((3, 2)), "b": jnp.zeros((4,))}, data())


def test_acceptance_by_loss_counts_and_errors():
  loss = np.array([np.inf, 2.0, 2.0, 2.0, 0.2, 0.2, 0.02, 0.02])
  accepted = np.array([True, True, True, False, True, False, False, False])
  p = amc_jax.acceptance_by_loss(loss, accepted, bins=[0.01, 0.1, 1.0, 10.0])
  np.testing.assert_allclose(p.count, [2, 2, 3])  # the inf (first step) is dropped
  np.testing.assert_allclose(p.rate, [0.0, 0.5, 2 / 3])
  np.testing.assert_allclose(p.stderr, np.sqrt(p.rate * (1 - p.rate) / p.count))
  np.testing.assert_allclose(p.centres, np.sqrt(p.edges[:-1] * p.edges[1:]))
  # History rows: acceptance fractions weighted by steps per row.
  q = amc_jax.acceptance_by_loss([0.5, 0.05], [0.25, 0.75], weights=[100, 300], bins=2)
  assert q.count.sum() == 400 and q.rate[0] == 0.75 and q.rate[-1] == 0.25
  lin = amc_jax.acceptance_by_loss([0.0, 1.0, 2.0], [1, 0, 0], bins=2, log=False)
  np.testing.assert_allclose(lin.rate, [1.0, 0.0])
  with pytest.raises(ValueError, match="log=True"):
    amc_jax.acceptance_by_loss([0.0, 1.0], [1, 0])
  with pytest.raises(ValueError, match="same number"):
    amc_jax.acceptance_by_loss([1.0, 2.0], [1])
  with pytest.raises(ValueError, match="fractions"):
    amc_jax.acceptance_by_loss([1.0, 2.0], [1.5, 0])


def test_loss_along_line():
  start = {"w": jnp.array([1.0, -1.0]), "b": jnp.array(0.5)}
  end = {"w": jnp.array([-1.0, 3.0]), "b": jnp.array(-0.5)}
  loss = lambda p, c: jnp.sum(p["w"] ** 2) + c * p["b"] ** 4
  probe = amc_jax.loss_along_line(loss, start, end, jnp.float32(2.0), num=9, margin=0.25)
  np.testing.assert_allclose(probe.alpha, np.linspace(-0.25, 1.25, 9))
  w = lambda a: (1 - a) * np.array([1.0, -1.0]) + a * np.array([-1.0, 3.0])
  b = lambda a: (1 - a) * 0.5 + a * -0.5
  np.testing.assert_allclose(probe.loss, [np.sum(w(a) ** 2) + 2 * b(a) ** 4 for a in probe.alpha], rtol=1e-5)
  with pytest.raises(ValueError, match="structure"):
    amc_jax.loss_along_line(loss, start, {"w": end["w"]}, 2.0)
  with pytest.raises(ValueError, match="num"):
    amc_jax.loss_along_line(loss, start, end, 2.0, num=1)


