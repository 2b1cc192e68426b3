"""Diagnostic: a vmapped aMC step on the sine net, 1 and 10 chains, with and
without value= (the first-step while loop), timed interleaved:

  python -m benchmarks.speed.profile_ensemble_step
"""
import jax, jax.numpy as jnp, optax, amc_jax
amc_jax.use_xla_cpu_workaround()
from benchmarks import _problems, _scans as B
params, loss = _problems.sine_problem()
tx = amc_jax.amc(1e-2, 0.1, 100)
N = 2000
def make(m, with_value, vm=True):
  bp = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), params)
  st = amc_jax.init_ensemble(tx, bp, jax.random.key(0))
  if with_value:
    up = lambda p, s: tx.update(None, s, p, value_fn=loss, value=s.loss)
  else:
    up = lambda p, s: tx.update(None, s, p, value_fn=loss)
  step = jax.vmap(up)
  @jax.jit
  def run(p, s):
    def body(c, _):
      p, s = c; u, s = step(p, s); return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (p, s), None, length=N)[0]
  st = st._replace(loss=jax.vmap(loss)(bp))
  p1, s1 = run(bp, st)
  return lambda: run(p1, s1)
fns = {"m1 no value": make(1, False), "m1 value": make(1, True), "m10 no value": make(10, False), "m10 value": make(10, True)}
res = B.time_interleaved(fns, 3)
for k, v in res.items(): print(k, round(v / N * 1e6, 1))
