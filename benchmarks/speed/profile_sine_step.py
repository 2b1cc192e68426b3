"""Diagnostic: the sine-net aMC step rebuilt in plain JAX, one ingredient at a time.

L0-L5 add, in turn: the optax-form update (params + where(accepted, eps, 0))
without and with the move divided by an opaque 1, the 3-way key split, the
Metropolis decision, the finiteness check, and a sigma and reject counter that
really change; then the floor of speed/step.py (_scans.py) and amc_jax.amc itself. All
timed interleaved in one run (median of 7):

  python -m benchmarks.speed.profile_sine_step
"""
import jax, jax.numpy as jnp, optax, amc_jax
from jax import lax
amc_jax.use_xla_cpu_workaround()
from benchmarks import _scans as B, _problems
from amc_jax._src import acceptance
pr = _problems.sine()
loss0, data, params = pr.loss, pr.data, pr.params
loss = lambda p: loss0(p, data)
N = 20000
def lean(split3=False, decision=False, finite=False, div=True, counters=False):
  def run(params, carry):
    def body(c, _):
      params, key, current, mu, sigma, nrej, count = c
      if split3:
        key, sub, akey = jax.random.split(key, 3)
      else:
        key, sub = jax.random.split(key)
      z = amc_jax.standard_normal_like(sub, params)
      eps = jax.tree_util.tree_map(lambda m, zz: m + sigma * zz, mu, z)
      if div:
        one = jnp.where(count >= 0, 1.0, 2.0)
        eps = jax.tree_util.tree_map(lambda e: e / one, eps)
      proposal = jax.tree_util.tree_map(lambda x, e: x + e, params, eps)
      proposed = loss(proposal)
      if finite:
        allf = jnp.all(jnp.stack([jnp.all(jnp.isfinite(f)) for f in jax.tree_util.tree_leaves(eps)]))
        proposed = jnp.where(allf, proposed, jnp.nan)
      if decision:
        accept = acceptance.metropolis_decision(akey, current, proposed, jnp.float32(0.0)).accepted
      else:
        accept = proposed <= current
      updates = jax.tree_util.tree_map(lambda e: jnp.where(accept, e, 0.0), eps)
      params = optax.apply_updates(params, updates)
      if counters:
        rej = nrej + 1
        reset = (~accept) & (rej >= 100)
        nrej = jnp.where(accept | reset, 0, rej)
        sigma = jnp.where(reset, sigma * 0.95, sigma)
      count = count + 1
      return (params, key, jnp.where(accept, proposed, current), mu, sigma, nrej, count), None
    return lax.scan(body, (params,) + carry, None, length=N)[0]
  return jax.jit(run)
carry = (jax.random.key(0), loss(params), jax.tree_util.tree_map(jnp.zeros_like, params), jnp.float32(1e-2), jnp.int32(0), jnp.int32(1))
variants = {
  "L0 add-update, no div": lean(div=False),
  "L1 add-update + div": lean(),
  "L2 + split3": lean(split3=True),
  "L3 + decision": lean(split3=True, decision=True),
  "L4 + finite": lean(split3=True, decision=True, finite=True),
  "L5 + counters": lean(split3=True, decision=True, finite=True, counters=True),
}
fns = {k: (lambda f=f: f(params, carry)) for k, f in variants.items()}
fl = B.scan_floor(loss0, N)
fns["floor"] = lambda: fl(params, (jax.random.key(0), loss(params)), data, jax.random.key(1))
tx = amc_jax.amc(1e-2, 0.1, 100); f = B.scan_amc(tx, loss0, N); p1, s1 = f(params, tx.init(params), data, jax.random.key(1))
fns["amc"] = lambda: f(p1, s1, data, jax.random.key(1))
res = B.time_interleaved(fns, 7)
for k, v in res.items(): print(f"{k:24s} {v/N*1e6:7.1f} us")
