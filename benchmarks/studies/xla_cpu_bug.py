"""Reproduction sweep for jax issue 39103 (XLA:CPU: matmul, then a reduction).

On some jaxlib versions a jitted matmul with a constant operand followed by a
reduction returns wrong numbers on CPU from batch 128 on. This script runs
the pattern and its neighbours for the installed jax and compares every
result with NumPy in float64:

* ``matmul``: ``(x @ W).sum(0)`` and ``(x @ W).sum()`` for batch 64, 128,
  256, 1024 and (d_in, d_out) = (5, 32) and (784, 16), float32, with ``W``
  ``jnp.ones`` built inside the function (``ones``, a broadcast constant
  in the HLO), a scalar argument broadcast to the shape (``scalar``), a
  NumPy array closed over (``const``, a dense constant in the HLO), or an
  argument (``arg``); and without the reduction (``none``) for contrast;
* ``sumsq``: ``(x * x).sum()`` for x of batch x 784 (a reduction alone);
* ``39103``: the issue's own reproducer (a vmapped ``eye(3) @ row``, squared
  and summed per row, float32), 1024 and 32769 rows;
* ``mlp``: ``jnp.mean((tanh(x @ W + b) @ W2 - y) ** 2)`` (784-16-10), with
  the weights closed over (``const``) or passed as arguments (``arg``).

A case is wrong when ``max |jax - numpy| / scale > --tol``, where ``scale``
is the same reduction of the absolute values of the summed terms (so the
test is relative to the conditioning of the sum; float32 rounding gives
~1e-7, the bug gives 1e-3 to nan). Prints one row per case, whether XLA
compiled it (partly) into a YNNPACK fusion (``__ynn_fusion`` in the
optimized HLO), and a verdict;
``--json OUT`` writes them. XLA reads ``XLA_FLAGS`` when JAX starts its
backends, so to test a flag, set it in the environment (or pass
``--xla-flags``, which sets it before jax is imported):

  python -m benchmarks.studies.xla_cpu_bug [--json OUT] [--xla-flags "--xla_cpu_..."]

``--time`` measures instead what the workaround costs: (a) ``sum(x * x)``
over a 60000x784 float32 array, (b) the loss of the 784-16-16-10 tanh MLP
(softmax + MSE) on 60000 examples and (c) its value and gradient, each under
no flag, the workaround flag and the alternatives in ``TIME_SETTINGS``. XLA
reads its flags once per process, so every setting runs in its own process;
the processes of one round run one after another and ``--rounds`` rounds
interleave them; a row is the median over rounds of each process's median
of ``--calls`` calls (milliseconds):

  python -m benchmarks.studies.xla_cpu_bug --time [--rounds 5] [--calls 5] [--json OUT]

Needs only jax and numpy (it runs in throwaway venvs of other jax versions).
The per-version results are in ``benchmarks/results/xla_cpu_bug.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

BATCHES = (64, 128, 256, 1024)
WIDTHS = ((5, 32), (784, 16))


def cases(np, jax, jnp):
  """Yields (name, function to jit, its arguments, float64 result, scale)."""
  rng = np.random.default_rng(0)
  for d_in, d_out in WIDTHS:
    w = rng.normal(size=(d_in, d_out)).astype(np.float32)
    for n in BATCHES:
      x = rng.normal(size=(n, d_in)).astype(np.float32)
      for operand in ("ones", "scalar", "const", "arg"):
        w_op = {"ones": np.ones((d_in, d_out), np.float32),
                "scalar": np.full((d_in, d_out), 1.5, np.float32)}.get(operand, w)
        prod = x.astype(np.float64) @ w_op.astype(np.float64)
        aprod = np.abs(x.astype(np.float64)) @ np.abs(w_op.astype(np.float64))
        for red in ("none", "sum0", "sum"):
          reduce = {"none": lambda z: z, "sum0": lambda z: z.sum(0), "sum": lambda z: z.sum()}[red]
          ref, scale = reduce(prod), reduce(aprod)
          if operand == "ones":
            fn = lambda x, reduce=reduce, s=(d_in, d_out): reduce(x @ jnp.ones(s, jnp.float32))
            args = (x,)
          elif operand == "scalar":  # a broadcast scalar that is not a constant
            fn = lambda x, c, reduce=reduce, s=(d_in, d_out): reduce(x @ jnp.broadcast_to(c, s))
            args = (x, np.float32(1.5))
          elif operand == "const":
            fn = lambda x, reduce=reduce, w=w: reduce(x @ w)
            args = (x,)
          else:
            fn = lambda x, w, reduce=reduce: reduce(x @ w)
            args = (x, w)
          yield f"matmul {red:4s} {operand:6s} {n:5d}x{d_in}->{d_out}", fn, args, ref, scale
  # A reduction with no matmul (what YNN's reduce fusion is for).
  for n in BATCHES:
    x = rng.normal(size=(n, 784)).astype(np.float32)
    ref = (x.astype(np.float64) ** 2).sum()
    yield f"sumsq  sum  -      {n:5d}x784", lambda x: (x * x).sum(), (x,), ref, ref
  # The loss of a small MLP, the pattern the library's benchmarks run.
  d_in, h, d_out = 784, 16, 10
  w1 = (rng.normal(size=(d_in, h)) / np.sqrt(d_in)).astype(np.float32)
  b1 = (0.1 * rng.normal(size=(h,))).astype(np.float32)
  w2 = (rng.normal(size=(h, d_out)) / np.sqrt(h)).astype(np.float32)
  for n in BATCHES:
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    y = rng.normal(size=(n, d_out)).astype(np.float32)
    f64 = lambda a: a.astype(np.float64)
    sq = (np.tanh(f64(x) @ f64(w1) + f64(b1)) @ f64(w2) - f64(y)) ** 2
    ref, scale = sq.mean(), sq.mean()  # all terms are >= 0
    for operand in ("const", "arg"):
      if operand == "const":
        fn = lambda x, y: jnp.mean((jnp.tanh(x @ w1 + b1) @ w2 - y) ** 2)
        args = (x, y)
      else:
        fn = lambda x, y, w1, b1, w2: jnp.mean((jnp.tanh(x @ w1 + b1) @ w2 - y) ** 2)
        args = (x, y, w1, b1, w2)
      yield f"mlp    mean {operand:6s} {n:5d}x{d_in}-{h}-{d_out}", fn, args, ref, scale
  # The reproducer of jax issue 39103 itself: rows (i, 0, 0), a vmapped
  # eye(3) @ row, squared and summed per row; wrong from row 32768 on.
  for n in (1024, 32769):
    x = np.stack([np.arange(n), np.zeros(n), np.zeros(n)], axis=1).astype(np.float32)
    ref = np.arange(n, dtype=np.float64) ** 2
    fn = lambda x: jax.vmap(lambda row: jnp.sum((jnp.eye(3, dtype=jnp.float32) @ row) ** 2))(x)
    yield f"39103  vmap eye(3) {n:6d}x3", fn, (x,), ref, np.maximum(ref, 1.0)


YNN = "--xla_cpu_experimental_ynn_fusion_type="
TIME_SETTINGS = {
    "no flag": "",
    "-reduce (workaround)": YNN + "-reduce",
    "-reduce,+eltwise": YNN + "-reduce,+eltwise",
    "all YNN fusions off": YNN,
}


def time_worker(calls: int) -> dict:
  """Median milliseconds of the three workloads in this process."""
  import statistics  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_platforms", "cpu")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(60000, 784)).astype(np.float32))
  t = jnp.asarray(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60000)])
  sizes = [(784, 16), (16, 16), (16, 10)]
  params = [(jnp.asarray(rng.uniform(-1, 1, (a, b)).astype(np.float32) / np.sqrt(a)),
             jnp.asarray(rng.uniform(-1, 1, (b,)).astype(np.float32) / np.sqrt(a))) for a, b in sizes]

  def loss(p, x, t):
    h = jnp.tanh(x @ p[0][0] + p[0][1])
    h = jnp.tanh(h @ p[1][0] + p[1][1])
    out = jax.nn.softmax(h @ p[2][0] + p[2][1])
    return jnp.mean(jnp.sum((out - t) ** 2, axis=-1))

  fns = {
      "sumsq 60000x784": (jax.jit(lambda x: jnp.sum(x * x)), (x,)),
      "mlp loss 60000": (jax.jit(loss), (params, x, t)),
      "mlp loss+grad 60000": (jax.jit(jax.value_and_grad(loss)), (params, x, t)),
  }
  out = {}
  for name, (fn, args) in fns.items():
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t0)
    out[name] = 1e3 * statistics.median(times)
  return out


def time_settings(rounds: int, calls: int) -> dict:
  """{setting: {workload: median ms over rounds}}, one process per setting and round."""
  import statistics  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top

  samples = {name: [] for name in TIME_SETTINGS}
  for _ in range(rounds):
    for name, flags in TIME_SETTINGS.items():
      env = {**os.environ, "XLA_FLAGS": flags}
      res = subprocess.run([sys.executable, __file__, "--time-worker", "--calls", str(calls)],
                           env=env, capture_output=True, text=True, check=True)
      samples[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
  return {name: {w: statistics.median(r[w] for r in rows) for w in rows[0]}
          for name, rows in samples.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--json", metavar="OUT", help="write the rows and the verdict as JSON")
  parser.add_argument("--xla-flags", default=None,
                      help="set XLA_FLAGS to this before jax is imported (default: leave it)")
  parser.add_argument("--tol", type=float, default=1e-4,
                      help="largest relative error (to the sum of |terms|) counted as correct")
  parser.add_argument("--time", action="store_true",
                      help="measure the workaround's cost instead (see the module docstring)")
  parser.add_argument("--rounds", type=int, default=5, help="--time: interleaved rounds")
  parser.add_argument("--calls", type=int, default=5, help="--time: timed calls per process")
  parser.add_argument("--time-worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.xla_flags is not None:
    os.environ["XLA_FLAGS"] = args.xla_flags
  if args.time_worker:
    print(json.dumps(time_worker(args.calls)))
    return 0
  if args.time:
    import jax  # pylint: disable=g-import-not-at-top
    table = time_settings(args.rounds, args.calls)
    workloads = list(next(iter(table.values())))
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, median ms of {args.rounds} rounds "
          f"x {args.calls} calls")
    print(f"{'setting':24s}" + "".join(f"{w:>22s}" for w in workloads))
    for name, row in table.items():
      print(f"{name:24s}" + "".join(f"{row[w]:22.2f}" for w in workloads))
    if args.json:
      with open(args.json, "w") as f:
        json.dump({"jax": jax.__version__, "cpu_count": os.cpu_count(),
                   "load_average_1_5_15": list(os.getloadavg()),
                   "rounds": args.rounds, "calls": args.calls,
                   "settings": TIME_SETTINGS, "ms": table}, f, indent=1)
        f.write("\n")
    return 0

  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_platforms", "cpu")
  rows = []
  for name, fn, fn_args, ref, scale in cases(np, jax, jnp):
    fn_args = [jnp.asarray(a) for a in fn_args]
    compiled = jax.jit(fn).lower(*fn_args).compile()
    ynn = "__ynn_fusion" in compiled.as_text()  # did XLA hand (part of) it to YNNPACK?
    got = np.asarray(compiled(*fn_args), np.float64)
    err = float(np.max(np.abs(got - ref) / np.maximum(scale, 1e-30)))
    rows.append({"case": name, "rel_err": err, "ok": bool(err <= args.tol), "ynn_fusion": ynn})
  wrong = [r["case"] for r in rows if not r["ok"]]
  versions = {
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": getattr(jaxlib, "__version__", None) or jaxlib.version.__version__,
      "numpy": np.__version__,
  }
  print(f"jax {versions['jax']}, jaxlib {versions['jaxlib']}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, tol {args.tol:g}")
  print(f"{'case':40s} {'rel err':>9s}  ynn")
  for r in rows:
    print(f"{r['case']:40s} {r['rel_err']:9.1e}  {'yes' if r['ynn_fusion'] else 'no ':3s} "
          f"{'' if r['ok'] else 'WRONG'}")
  print(f"{len(wrong)} of {len(rows)} cases wrong" + (": AFFECTED" if wrong else ": correct"))
  if args.json:
    record = {
        **versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "device": str(jax.devices()[0]),
        "processor": platform.processor() or platform.machine(),
        "tol": args.tol,
        "affected": bool(wrong),
        "ynn_fusion_cases": sum(r["ynn_fusion"] for r in rows),
        "wrong": wrong,
        "rows": rows,
    }
    with open(args.json, "w") as f:
      json.dump(record, f, indent=1)
      f.write("\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
