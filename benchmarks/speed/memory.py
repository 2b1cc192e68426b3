"""Memory of one training step: Monte Carlo against Adam, SGD and MeZO.

Each step is one jitted program, ``tx.update`` + ``optax.apply_updates`` with
params and optimizer state donated (as ``amc_jax.fit`` and the README's step
run it), and its memory is read from XLA's compiled memory analysis
(argument, output, temp and alias bytes; total = argument + output + temp -
alias), compiled for abstract shapes (nothing is allocated). P is one copy
of the params, fwd the compiled loss evaluation alone (its total, params
included).

``--part compiled`` (the table). Rows:

* the forward pass alone;
* ``amc`` at epsilon 0 and 0.1, ``metropolis``; each also with
  ``proposal_batch_size=1`` ("b=1"), which keeps no move and draws an
  accepted move again from its key;
* ``amc(num_proposals=K)`` for K = 4 and 16, all K in one vmapped call and
  one at a time (``proposal_batch_size=1``); ``replica_exchange``, 4 replicas;
  4 vmapped chains (``init_ensemble``), per chain;
* signal norm (``amc(..., signal_norm=True)``, flax models only);
* ``optax.adam`` and ``optax.sgd`` through ``jax.grad``;
* MeZO (Malladi et al. 2023), written here as the forward-only peer:
  zeroth-order SGD whose perturbation z is regenerated from a seed, the
  params moved in place: +eps z, evaluate, -2 eps z, evaluate, +eps z, then
  -lr * g * z.

Models: a params-dominated MLP (784-4096x3-10, batch 8, 36.8M params), the
same MLP as a flax ``nn.Dense`` stack (for the signal-norm rows), tanh RNNs
of length 784 and 4096 (hidden 256, batch 64), where activations dominate,
and a flax transformer language model of GPT-2-small shape (12 layers, 768
wide, 12 heads, vocabulary 50257, tied embeddings: 124M params; sequence
512, batch 1).

``--part rss``: peak RSS (``/usr/bin/time -v``) of short real runs in fresh
processes on the MLP: one loss evaluation; 5 steps of ``amc_jax.fit(
metropolis(1e-3))`` from the caller's params, which fit copies before it
donates its own (``fit``) or trains in directly (``fit(..., donate=True)``),
each also with ``proposal_batch_size=1``; from an init function with
``proposal_batch_size=1``; and 5 steps of the README's hand-written donated
step with ``proposal_batch_size=1``.

``--part headline``: the largest MLP (784-Wx3-10, batch 8) whose step fits
``--budget-gib`` (18 GiB of this 24 GiB machine) by its compiled memory, for Adam and for aMC (epsilon 0,
``proposal_batch_size=1``); then aMC trains its largest for 20 steps in a
fresh process (random init and data), with its peak RSS, wall time and
loss curve. Adam's largest is judged from compiled memory only (no job is
run to out-of-memory).

Each part is written into the JSON as it finishes; a rerun skips the parts
already there (``--force`` reruns them).

  python -m benchmarks.speed.memory [--part compiled rss headline] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys

from benchmarks import _common
from benchmarks._problems import sds as _sds, wide_mlp as mlp

MiB = 2.0**20
GiB = 2.0**30


def flax_mlp(width: int, batch: int = 8, d_in: int = 784):
  """The MLP as a flax ``nn.Dense`` stack: (params, loss, signal-norm value_fn)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  import amc_jax

  model = nn.Sequential([nn.Dense(width), nn.tanh, nn.Dense(width), nn.tanh,
                         nn.Dense(width), nn.tanh, nn.Dense(10)])
  x, y = jnp.ones((batch, d_in)), jnp.zeros((batch, 10))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
  mse = lambda out, y: jnp.mean((out - y) ** 2)
  value_fn = amc_jax.signal_norm_value_fn(model, mse)
  return params, (lambda p: mse(model.apply({"params": p}, x), y)), (lambda p: value_fn(p, x, y))


def rnn(length: int, hidden: int = 256, batch: int = 64):
  import jax
  import jax.numpy as jnp

  params = {"w_in": _sds((2, hidden)), "w_h": _sds((hidden, hidden)),
            "b": _sds((hidden,)), "w_out": _sds((hidden, 2))}
  xs = jnp.ones((length, batch, 2))
  labels = jnp.zeros((batch,), jnp.int32)

  def loss(p):
    def cell(h, x):
      return jnp.tanh(x @ p["w_in"] + h @ p["w_h"] + p["b"]), None

    h, _ = jax.lax.scan(cell, jnp.zeros((batch, hidden)), xs)
    logits = h @ p["w_out"]
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(batch), labels])

  return params, loss


def gpt2(n_layer: int = 12, d: int = 768, heads: int = 12, vocab: int = 50257,
         seq: int = 512, batch: int = 1):
  """A flax transformer language model of GPT-2-small shape (pre-LayerNorm
  blocks, causal attention, 4d GELU MLP, learned positions, tied output
  embedding) and its next-token cross-entropy on one fixed sequence."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, mask):
      h = nn.LayerNorm()(x)
      x = x + nn.MultiHeadDotProductAttention(num_heads=heads)(h, h, mask=mask)
      h = nn.LayerNorm()(x)
      return x + nn.Dense(d)(nn.gelu(nn.Dense(4 * d)(h)))

  class GPT(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      embed = nn.Embed(vocab, d)
      x = embed(tokens) + nn.Embed(1024, d)(jnp.arange(tokens.shape[-1]))
      mask = nn.make_causal_mask(tokens)
      for _ in range(n_layer):
        x = Block()(x, mask)
      return embed.attend(nn.LayerNorm()(x))

  model = GPT()
  tokens = jnp.arange(batch * (seq + 1), dtype=jnp.int32).reshape(batch, seq + 1) % vocab
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens[:, :-1]))["params"]

  def loss(p):
    logits = model.apply({"params": p}, tokens[:, :-1])
    return jnp.mean(jax.nn.logsumexp(logits, -1)
                    - jnp.take_along_axis(logits, tokens[:, 1:, None], -1)[..., 0])

  return params, loss


def mezo(lr: float = 1e-6, eps: float = 1e-3):
  """MeZO's step: z regenerated from one seed, params perturbed in place."""
  import jax

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


def mc_memory(tx, params, loss):
  """Compiled memory of a donated Monte Carlo step."""
  import jax
  import optax

  def step(p, s):
    u, s = tx.update(None, s, p, value_fn=loss)
    return optax.apply_updates(p, u), s

  return compiled_memory(step, params, jax.eval_shape(tx.init, params), donate=(0, 1))


def grad_memory(tx, params, loss):
  """Compiled memory of a donated gradient step."""
  import jax
  import optax

  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  return compiled_memory(step, params, jax.eval_shape(tx.init, params), donate=(0, 1))


def mezo_memory(params, loss):
  """Compiled memory of a MeZO step (:func:`mezo`), params donated."""
  import jax

  step = mezo()
  return compiled_memory(lambda p, k: step(p, k, loss), params, jax.random.key(0), donate=(0,))


def param_bytes(params) -> int:
  """P: the bytes of one copy of ``params`` (arrays or ShapeDtypeStructs)."""
  import jax

  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))


def monte_carlo_rows(full: bool = True):
  """(row name, transformation) for the Monte Carlo rows."""
  import amc_jax

  rows = [("amc eps=0", amc_jax.amc(1e-3)),
          ("amc eps=0 b=1", amc_jax.amc(1e-3, proposal_batch_size=1)),
          ("amc eps=0.1", amc_jax.amc(1e-3, epsilon=0.1)),
          ("amc eps=0.1 b=1", amc_jax.amc(1e-3, epsilon=0.1, proposal_batch_size=1)),
          ("metropolis", amc_jax.metropolis(1e-3)),
          ("metropolis b=1", amc_jax.metropolis(1e-3, proposal_batch_size=1))]
  if full:
    rows += [("amc K=4", amc_jax.amc(1e-3, num_proposals=4)),
             ("amc K=16", amc_jax.amc(1e-3, num_proposals=16))]
  rows += [("amc K=4 b=1", amc_jax.amc(1e-3, num_proposals=4, proposal_batch_size=1)),
           ("amc K=16 b=1", amc_jax.amc(1e-3, num_proposals=16, proposal_batch_size=1))]
  return rows


def rows_for(params, loss, full: bool = True):
  import jax
  import optax

  import amc_jax

  out = {"forward": compiled_memory(loss, params)}
  for name, tx in monte_carlo_rows(full):
    out[name] = mc_memory(tx, params, loss)
  if full:
    tx = amc_jax.replica_exchange(amc_jax.amc(1e-3), [0.0, 1e-3, 2e-3, 4e-3], seed=0)
    stacked = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((4,) + tuple(x.shape), x.dtype), params)
    out["replica_exchange R=4"] = mc_memory(tx, stacked, loss)
    for name, tx in (("amc eps=0", amc_jax.amc(1e-3)),
                     ("amc eps=0 b=1", amc_jax.amc(1e-3, proposal_batch_size=1)),
                     ("amc eps=0.1", amc_jax.amc(1e-3, epsilon=0.1))):
      out[f"{name}, 4 vmapped chains (per chain)"] = ensemble_memory(tx, params, loss, 4)
  for name, tx in (("adam", optax.adam(1e-3)), ("sgd", optax.sgd(1e-3))):
    out[name] = grad_memory(tx, params, loss)
  out["MeZO"] = mezo_memory(params, loss)
  return out


def ensemble_memory(tx, params, loss, n_chains):
  """Compiled memory of a donated step of ``n_chains`` vmapped chains, per chain."""
  import jax
  import optax

  import amc_jax

  stacked = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct((n_chains,) + tuple(x.shape), x.dtype), params)

  def step(p, s):
    u, s = jax.vmap(lambda p, s: tx.update(None, s, p, value_fn=loss))(p, s)
    return optax.apply_updates(p, u), s

  states = jax.eval_shape(lambda p: amc_jax.init_ensemble(tx, p, 0), stacked)
  total = compiled_memory(step, stacked, states, donate=(0, 1))
  return {k: v / n_chains for k, v in total.items()}


def signal_norm_rows(width: int):
  """The flax MLP: the same steps with and without signal norm."""
  import optax

  import amc_jax

  params, loss, value_fn = flax_mlp(width)
  out = {"forward": compiled_memory(loss, params)}
  for eps in (0.0, 0.1):
    for b in (None, 1):
      tag = f"amc eps={eps:g}" + ("" if b is None else " b=1")
      out[tag] = mc_memory(amc_jax.amc(1e-3, epsilon=eps, proposal_batch_size=b), params, loss)
      out[tag + " signal norm"] = mc_memory(
          amc_jax.amc(1e-3, epsilon=eps, proposal_batch_size=b, signal_norm=True),
          params, value_fn)
  out["adam"] = grad_memory(optax.adam(1e-3), params, loss)
  out["MeZO"] = mezo_memory(params, loss)
  return params, out


def table(name, params, rows):
  p_bytes = param_bytes(params)
  fwd = rows["forward"]["total"]
  adam, mezo_total = rows["adam"]["total"], rows["MeZO"]["total"]
  print(f"\n{name}: P = {p_bytes / MiB:.1f} MiB ({p_bytes // 4:,} params), "
        f"fwd = {fwd / MiB:.1f} MiB", flush=True)
  print(f"{'step':30s} {'total MiB':>10s} {'(total-fwd)/P':>14s} {'/ fwd':>7s} {'/ Adam':>7s}"
        f" {'/ MeZO':>7s}")
  summary = {}
  for method, r in rows.items():
    s = {"total_mib": r["total"] / MiB, "over_fwd_in_P": (r["total"] - fwd) / p_bytes,
         "ratio_to_fwd": r["total"] / fwd, "ratio_to_adam": r["total"] / adam,
         "ratio_to_mezo": r["total"] / mezo_total, **r}
    summary[method] = s
    print(f"{method:30s} {s['total_mib']:10.1f} {s['over_fwd_in_P']:14.2f}"
          f" {s['ratio_to_fwd']:7.2f} {s['ratio_to_adam']:7.2f} {s['ratio_to_mezo']:7.2f}")
  return {"params_bytes": p_bytes, "forward_bytes": fwd, "rows": summary}


def part_compiled(args):
  models = {}
  name = f"MLP 784-{args.mlp_width}x3-10, batch 8"
  params, loss = mlp(args.mlp_width)
  models[name] = table(name, params, rows_for(params, loss))
  name = f"flax nn.Dense MLP 784-{args.mlp_width}x3-10, batch 8 (signal norm)"
  params, rows = signal_norm_rows(args.mlp_width)
  models[name] = table(name, params, rows)
  for length in args.rnn_lengths:
    params, loss = rnn(length)
    name = f"tanh RNN hidden 256, length {length}, batch 64"
    models[name] = table(name, params, rows_for(params, loss))
  if args.gpt2_layers:
    params, loss = gpt2(n_layer=args.gpt2_layers, d=args.gpt2_width, heads=args.gpt2_heads,
                        seq=args.gpt2_seq, vocab=args.gpt2_vocab)
    name = (f"GPT-2-shaped transformer, {args.gpt2_layers} layers x {args.gpt2_width},"
            f" sequence {args.gpt2_seq}, batch 1")
    models[name] = table(name, params, rows_for(params, loss, full=False))
  return {"models": models}


# --- peak RSS of real runs ---------------------------------------------------

RSS_SCRIPT = """
import sys, time, jax, jax.numpy as jnp, optax, amc_jax
from benchmarks._problems import wide_mlp as mlp
mode, width, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = 1 if mode.endswith("b=1") else None
sigma = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
tx = amc_jax.amc(sigma, proposal_batch_size=b) if mode == "step b=1" else (
    amc_jax.metropolis(sigma, proposal_batch_size=b))
t0 = time.perf_counter()
if mode == "forward":
  params, loss = mlp(width, abstract=False)
  print("losses", [float(jax.jit(loss)(params))])
elif mode.startswith("fit") and "init" not in mode:  # from the caller's params
  params, loss = mlp(width, abstract=False)
  r = amc_jax.fit(tx, params, loss, steps=steps, progress=False, donate="donate" in mode)
  print("losses", list(map(float, r.history["loss"])))
elif mode == "fit init b=1":
  abstract, loss = mlp(width)
  init = lambda key: mlp(width, abstract=False)[0]
  r = amc_jax.fit(tx, init, loss, steps=steps, progress=False)
  print("losses", list(map(float, r.history["loss"])))
else:  # the README's hand-written donated step
  params, loss = mlp(width, abstract=False)
  @jax.jit
  def first_loss(p):
    return loss(p)
  @(lambda f: jax.jit(f, donate_argnums=(0, 1)))
  def step(p, s):
    u, s = tx.update(None, s, p, value_fn=loss)
    return optax.apply_updates(p, u), s
  state = tx.init(params)
  losses = [float(first_loss(params))]
  for _ in range(steps):
    params, state = step(params, state)
    losses.append(float(state.loss))
    print("step", len(losses) - 1, losses[-1], "accepted", int(state.n_accept),
          f"{time.perf_counter() - t0:.0f} s", flush=True)
  print("losses", losses)
print("seconds", time.perf_counter() - t0)
"""


#: forward: init + one loss; fit: from the caller's params (copied, or donated
#: with donate=True) or an init function; step: the README's donated step.
RSS_MODES = ("forward", "fit", "fit b=1", "fit donate", "fit donate b=1", "fit init b=1",
             "step b=1")


def peak_rss(mode: str, width: int, steps: int = 5, sigma: float = 1e-3) -> dict:
  cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RSS_SCRIPT, mode, str(width), str(steps),
         str(sigma)]
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=_common.ROOT, check=True)
  kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
  losses = json.loads(re.search(r"^losses (.*)$", r.stdout, re.M).group(1))
  seconds = float(re.search(r"^seconds (.*)$", r.stdout, re.M).group(1))
  return {"peak_rss_mib": kib / 1024.0, "losses": losses, "seconds": seconds}


def part_rss(args):
  params, _ = mlp(args.mlp_width)
  p_mib = param_bytes(params) / MiB
  out = {"width": args.mlp_width, "P_mib": p_mib}
  for mode in RSS_MODES:
    out[mode] = peak_rss(mode, args.mlp_width)
  fwd = out["forward"]["peak_rss_mib"]
  print(f"\npeak RSS, MLP 784-{args.mlp_width}x3-10 (P = {p_mib:.1f} MiB):")
  for mode in RSS_MODES:
    r = out[mode]
    r["over_forward_in_P"] = (r["peak_rss_mib"] - fwd) / p_mib
    print(f"  {mode:14s} {r['peak_rss_mib']:8.0f} MiB  forward + {r['over_forward_in_P']:.2f} P")
  return out


# --- the largest net ---------------------------------------------------------

def part_headline(args):
  import jax
  import optax

  import amc_jax

  budget = args.budget_gib * GiB
  ladder = []
  for width in args.widths:
    params, loss = mlp(width)
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    adam = grad_memory(optax.adam(1e-3), params, loss)["total"]
    mc = mc_memory(amc_jax.amc(1e-3, proposal_batch_size=1), params, loss)["total"]
    ladder.append({"width": width, "params": n, "adam_gib": adam / GiB, "amc_b1_gib": mc / GiB})
    print(f"width {width:6d}: {n / 1e9:.2f}B params, Adam step {adam / GiB:6.2f} GiB,"
          f" aMC step (b=1) {mc / GiB:6.2f} GiB", flush=True)
  fits = lambda key: [r for r in ladder if r[key] * GiB <= budget]
  adam_best, amc_best = max(fits("adam_gib"), key=lambda r: r["params"]), max(
      fits("amc_b1_gib"), key=lambda r: r["params"])
  print(f"largest within {args.budget_gib} GiB: Adam {adam_best['params'] / 1e9:.2f}B params"
        f" (width {adam_best['width']}), aMC {amc_best['params'] / 1e9:.2f}B"
        f" (width {amc_best['width']})", flush=True)
  run = peak_rss("step b=1", amc_best["width"], steps=args.headline_steps,
                 sigma=args.headline_sigma)
  losses = run["losses"]
  print(f"aMC at width {amc_best['width']}: {args.headline_steps} steps, loss {losses[0]:.5f} ->"
        f" {losses[-1]:.5f}, peak RSS {run['peak_rss_mib'] / 1024:.2f} GiB,"
        f" {run['seconds']:.0f} s")
  return {"budget_gib": args.budget_gib, "ladder": ladder, "adam_largest": adam_best,
          "amc_largest": amc_best, "amc_run": {"width": amc_best["width"],
                                               "sigma": args.headline_sigma, **run},
          "params_ratio": amc_best["params"] / adam_best["params"]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", nargs="*", default=["compiled", "rss"],
                      choices=["compiled", "rss", "headline"])
  parser.add_argument("--mlp-width", type=int, default=4096)
  parser.add_argument("--rnn-lengths", type=int, nargs="*", default=[784, 4096])
  parser.add_argument("--gpt2-layers", type=int, default=12, help="0: no transformer rows")
  parser.add_argument("--gpt2-width", type=int, default=768)
  parser.add_argument("--gpt2-heads", type=int, default=12)
  parser.add_argument("--gpt2-seq", type=int, default=512)
  parser.add_argument("--gpt2-vocab", type=int, default=50257)
  parser.add_argument("--budget-gib", type=float, default=18.0)
  parser.add_argument("--widths", type=int, nargs="*",
                      default=[8192, 16384, 20480, 22528, 23552, 24576, 28672, 29696, 30720,
                               31744, 32768])
  parser.add_argument("--headline-steps", type=int, default=20)
  parser.add_argument("--headline-sigma", type=float, default=1e-4)
  parser.add_argument("--force", action="store_true", help="rerun parts already in the JSON")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--out-dir", type=pathlib.Path, default=_common.ROOT / "benchmarks" / "out")
  args = parser.parse_args(argv)
  if args.quick:
    _common.quick_compile()
    args.mlp_width, args.rnn_lengths = 64, [16]
    args.gpt2_layers, args.gpt2_width, args.gpt2_heads = 1, 32, 4
    args.gpt2_seq, args.gpt2_vocab = 16, 100
    args.widths, args.budget_gib, args.headline_steps = [16, 32], 1.0, 3
  import amc_jax
  amc_jax.use_xla_cpu_workaround()

  path = args.out_dir / ("bench_memory_quick.json" if args.quick else "bench_memory.json")
  result = json.loads(path.read_text()) if path.exists() and not args.quick else {}
  result.setdefault("commands", {})
  for part in args.part:
    if part in result and not args.force:
      print(f"{part}: already in {path} (--force reruns it)")
      continue
    result[part] = {"compiled": part_compiled, "rss": part_rss,
                    "headline": part_headline}[part](args)
    result["commands"][part] = _common.command()
    result["machine"] = _common.machine()
    _common.write_json(path, result)
  return result


if __name__ == "__main__":
  main()
