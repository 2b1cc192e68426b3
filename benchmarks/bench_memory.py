"""Memory of one training step: Monte Carlo against Adam, SGD and MeZO.

Each step is one jitted program, ``tx.update`` + ``optax.apply_updates`` with
params and optimizer state donated (as ``amc_jax.fit`` and the README's step
run it), and its memory is read from XLA's compiled memory analysis
(argument, output, temp and alias bytes; total = argument + output + temp -
alias). P is one copy of the params, fwd the compiled loss evaluation alone
(its total, params included). Rows:

* the forward pass alone;
* ``amc`` at epsilon 0 and 0.1, ``metropolis``, ``amc(num_proposals=K)``
  for K = 4 and 16, all K in one vmapped call and one at a time
  (``proposal_batch_size=1``), ``replica_exchange`` with 4 replicas;
* ``optax.adam`` and ``optax.sgd`` through ``jax.grad``;
* MeZO (Malladi et al. 2023), written here as the forward-only peer:
  zeroth-order SGD whose perturbation z is regenerated from a seed, the
  params moved in place: +eps z, evaluate, -2 eps z, evaluate, +eps z,
  then -lr * g * z.

Models: a params-dominated MLP (``--mlp-width``, three hidden layers, batch
8; 50M params at the default width 4096, compiled only) and tanh RNNs of
length 784 and 4096 (hidden 256, batch 64), where activations dominate.

``--rss`` also measures the peak RSS (``/usr/bin/time -v``) of short real runs
in fresh processes on the MLP: one loss evaluation, and 5 steps of
``amc_jax.fit(amc_jax.metropolis(1e-3), ...)``.

  python -m benchmarks.bench_memory [--rss] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys

from benchmarks import _common

MiB = 2.0**20


def mlp(width: int, batch: int = 8, d_in: int = 784):
  import jax.numpy as jnp

  sizes = [(d_in, width), (width, width), (width, width), (width, 10)]
  params = {f"l{i}": {"w": jnp.zeros(s, jnp.float32), "b": jnp.zeros(s[1], jnp.float32)}
            for i, s in enumerate(sizes)}
  x, y = jnp.ones((batch, d_in)), jnp.zeros((batch, 10))

  def loss(p):
    h = x
    for i in range(len(sizes)):
      h = h @ p[f"l{i}"]["w"] + p[f"l{i}"]["b"]
      if i + 1 < len(sizes):
        h = jnp.tanh(h)
    return jnp.mean((h - y) ** 2)

  return params, loss


def rnn(length: int, hidden: int = 256, batch: int = 64):
  import jax
  import jax.numpy as jnp

  params = {"w_in": jnp.zeros((2, hidden)), "w_h": jnp.zeros((hidden, hidden)),
            "b": jnp.zeros(hidden), "w_out": jnp.zeros((hidden, 2))}
  xs = jnp.ones((length, batch, 2))
  labels = jnp.zeros((batch,), jnp.int32)

  def loss(p):
    def cell(h, x):
      return jnp.tanh(x @ p["w_in"] + h @ p["w_h"] + p["b"]), None

    h, _ = jax.lax.scan(cell, jnp.zeros((batch, hidden)), xs)
    logits = h @ p["w_out"]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(batch), labels])

  return params, loss


def mezo(lr: float = 1e-6, eps: float = 1e-3):
  """MeZO's step: z regenerated from one seed, params perturbed in place."""
  import jax
  import jax.numpy as jnp

  def perturb(params, key, scale):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [
        x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])

  def step(params, key, loss):
    key, sub = jax.random.split(key)
    params = perturb(params, sub, eps)
    plus = loss(params)
    params = perturb(params, sub, -2 * eps)
    minus = loss(params)
    params = perturb(params, sub, eps)
    g = (plus - minus) / (2 * eps)
    return perturb(params, sub, -lr * g), key

  return step


def compiled_memory(fn, *args, donate=()):
  import jax

  m = jax.jit(fn, donate_argnums=donate).lower(*args).compile().memory_analysis()
  return {
      "argument": m.argument_size_in_bytes, "output": m.output_size_in_bytes,
      "temp": m.temp_size_in_bytes, "alias": m.alias_size_in_bytes,
      "total": m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
      - m.alias_size_in_bytes,
  }


def rows_for(params, loss):
  import jax
  import optax
  import amc_jax

  def mc_step(tx):
    def step(p, s):
      u, s = tx.update(None, s, p, value_fn=loss)
      return optax.apply_updates(p, u), s
    return step, tx.init(params)

  def grad_step(tx):
    def step(p, s):
      u, s = tx.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, u), s
    return step, tx.init(params)

  def replicas():
    tx = amc_jax.replica_exchange(amc_jax.amc(1e-3), [0.0, 1e-3, 2e-3, 4e-3], seed=0)
    stacked = jax.tree_util.tree_map(lambda x: jax.numpy.stack([x] * 4), params)
    vloss = loss

    def step(p, s):
      u, s = tx.update(None, s, p, value_fn=vloss)
      return optax.apply_updates(p, u), s
    return step, tx.init(stacked), stacked

  out = {"forward": compiled_memory(loss, params)}
  for name, tx in (("amc eps=0", amc_jax.amc(1e-3)),
                   ("amc eps=0.1", amc_jax.amc(1e-3, epsilon=0.1)),
                   ("metropolis", amc_jax.metropolis(1e-3)),
                   ("amc K=4", amc_jax.amc(1e-3, num_proposals=4)),
                   ("amc K=4 b=1", amc_jax.amc(1e-3, num_proposals=4, proposal_batch_size=1)),
                   ("amc K=16", amc_jax.amc(1e-3, num_proposals=16)),
                   ("amc K=16 b=1", amc_jax.amc(1e-3, num_proposals=16, proposal_batch_size=1))):
    step, state = mc_step(tx)
    out[name] = compiled_memory(step, params, state, donate=(0, 1))
  try:
    step, state, stacked = replicas()
    out["replica_exchange R=4"] = compiled_memory(step, stacked, state, donate=(0, 1))
  except Exception as e:  # pylint: disable=broad-except
    out["replica_exchange R=4"] = {"error": f"{type(e).__name__}: {e}"[:200]}
  for name, tx in (("adam", optax.adam(1e-3)), ("sgd", optax.sgd(1e-3))):
    step, state = grad_step(tx)
    out[name] = compiled_memory(step, params, state, donate=(0, 1))
  mezo_step = mezo()
  out["MeZO"] = compiled_memory(lambda p, k: mezo_step(p, k, loss), params,
                                jax.random.key(0), donate=(0,))
  return out


def table(name, params, rows):
  import jax

  p_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  fwd = rows["forward"]["total"]
  adam, mezo_total = rows["adam"]["total"], rows["MeZO"]["total"]
  print(f"\n{name}: P = {p_bytes / MiB:.1f} MiB ({p_bytes // 4:,} params), "
        f"fwd = {fwd / MiB:.1f} MiB")
  print(f"{'step':22s} {'total MiB':>10s} {'(total-fwd)/P':>14s} {'/ fwd':>7s} {'/ Adam':>7s}"
        f" {'/ MeZO':>7s}")
  summary = {}
  for method, r in rows.items():
    if "error" in r:
      print(f"{method:22s} {r['error']}")
      continue
    s = {"total_mib": r["total"] / MiB, "over_fwd_in_P": (r["total"] - fwd) / p_bytes,
         "ratio_to_fwd": r["total"] / fwd, "ratio_to_adam": r["total"] / adam,
         "ratio_to_mezo": r["total"] / mezo_total, **r}
    summary[method] = s
    print(f"{method:22s} {s['total_mib']:10.1f} {s['over_fwd_in_P']:14.2f}"
          f" {s['ratio_to_fwd']:7.2f} {s['ratio_to_adam']:7.2f} {s['ratio_to_mezo']:7.2f}")
  return {"params_bytes": p_bytes, "forward_bytes": fwd, "rows": summary}


RSS_SCRIPT = """
import jax, jax.numpy as jnp, amc_jax
amc_jax.use_xla_cpu_workaround()
from benchmarks.bench_memory import mlp
params, loss = mlp({width})
if {fit}:
  r = amc_jax.fit(amc_jax.metropolis(1e-3), params, loss, steps=5, progress=False)
  print("loss", r.history["loss"][-1])
else:
  print("loss", float(jax.jit(loss)(params)))
"""


def peak_rss(width, fit):
  cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RSS_SCRIPT.format(width=width, fit=fit)]
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=_common.ROOT, check=True)
  kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
  return kib / 1024.0


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mlp-width", type=int, default=4096)
  parser.add_argument("--rnn-lengths", type=int, nargs="*", default=[784, 4096])
  parser.add_argument("--rss", action="store_true", help="peak RSS of real MLP runs too")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out-dir", type=pathlib.Path, default=_common.ROOT / "benchmarks" / "out")
  args = parser.parse_args(argv)
  if args.quick:
    _common.quick_compile()
    args.mlp_width, args.rnn_lengths = 64, [16]
  import amc_jax
  amc_jax.use_xla_cpu_workaround()

  result = {"command": _common.command(), "models": {}}
  params, loss = mlp(args.mlp_width)
  result["models"][f"MLP 784-{args.mlp_width}x3-10, batch 8"] = table(
      f"MLP 784-{args.mlp_width}x3-10, batch 8", params, rows_for(params, loss))
  for length in args.rnn_lengths:
    params, loss = rnn(length)
    name = f"tanh RNN hidden 256, length {length}, batch 64"
    result["models"][name] = table(name, params, rows_for(params, loss))
  if args.rss:
    rss = {"forward": peak_rss(args.mlp_width, False),
           "fit(metropolis), 5 steps": peak_rss(args.mlp_width, True)}
    result["peak_rss_mib_mlp"] = rss
    print(f"\npeak RSS, MLP width {args.mlp_width}: " + ", ".join(
        f"{k} {v:.0f} MiB" for k, v in rss.items()))
  _common.write_json(args.out_dir / ("bench_memory_quick.json" if args.quick
                                     else "bench_memory.json"), result)
  return result


if __name__ == "__main__":
  main()
