"""Time per step of the authors' PyTorch aMC optimizer, for the benchmark tables.

The reference is ``aMC_optimizer.py`` of https://github.com/reproducible-science/aMC
(Whitelam et al. 2022). It is not copied into this repository: point
``amc_dir`` (or the environment variable ``AMC_TORCH_DIR``) at a checkout, a
directory that contains ``aMC_optimizer.py``, and it is imported from there.
torch is an optional extra (``pip install torch==2.13.0``).

Their optimizer, as read from that file::

  aMC(params, init_sigma, epsilon=0., beta="inf", n_reset=100,
      sigma_decay=.95, minibatch=False)
  loss = optimizer.step(closure)   # closure() -> scalar loss tensor

``step`` runs under ``torch.no_grad()``. With ``minibatch=False`` it caches the
loss of the current parameters, so a step costs one ``closure()`` (two on the
first step); with ``minibatch=True`` it calls ``closure()`` twice per step, once
on the current and once on the proposed parameters. One normal draw per
parameter tensor (``torch.normal(mean=mu, std=sigma)``), in-place add, then
``if cost <= 0`` turns a tensor into a Python bool (a host sync on a GPU); on
rejection the noise is subtracted again.

Minibatches are drawn here, in the timed loop, as in their ``mnist_rnn.py``:
each step draws row indices with ``torch.randint`` (uniform, with
replacement), gathers the rows, and passes ``optimizer.step`` a closure over
that batch, with ``minibatch=True`` so that both evaluations of the step see
the same rows.

  AMC_TORCH_DIR=/path/to/aMC python -m benchmarks._torch_reference

prints seconds per step for each problem on synthetic data of the benchmark
shapes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import time

import numpy as np

ENV_VAR = "AMC_TORCH_DIR"
FILE_NAME = "aMC_optimizer.py"
PROBLEMS = ("sine", "mlp", "deep", "rnn")

_loaded: dict = {}  # resolved path of aMC_optimizer.py -> module

if "torch" not in sys.modules:
  # OpenMP threads that spin while they wait made torch 10-100x slower on a
  # machine shared with other jobs (2 cores, load 6); sleeping waiters cost
  # little when it is quiet. libgomp reads this once, when torch is first
  # imported, so it is set on importing this module. Export
  # OMP_WAIT_POLICY=ACTIVE to measure torch's default instead.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _resolve_dir(amc_dir):
  return amc_dir if amc_dir else os.environ.get(ENV_VAR) or None


def _load(amc_dir=None):
  """(torch, the aMC class, path), or raises RuntimeError saying why not."""
  try:
    import torch
  except ImportError as e:
    raise RuntimeError(f"torch is not installed ({e}); pip install torch==2.13.0") from e
  where = _resolve_dir(amc_dir)
  source = "argument" if amc_dir else ENV_VAR
  if where is None:
    raise RuntimeError(
        f"no checkout of reproducible-science/aMC given (--amc-torch-dir or {ENV_VAR})"
    )
  path = (pathlib.Path(where).expanduser() / FILE_NAME).resolve()
  if not path.is_file():
    raise RuntimeError(f"{path} does not exist (directory {where!r} from {source})")
  key = str(path)
  if key not in _loaded:
    spec = importlib.util.spec_from_file_location("_amc_torch_reference_optimizer", path)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except Exception as e:  # their file failed to import
      raise RuntimeError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, "aMC"):
      raise RuntimeError(f"{path} defines no class aMC")
    _loaded[key] = module
  return torch, _loaded[key].aMC, path


def available(amc_dir: str | None = None) -> tuple[bool, str]:
  """(True, description) or (False, reason it is skipped)."""
  try:
    torch, _, path = _load(amc_dir)
  except RuntimeError as e:
    return False, str(e)
  return True, f"torch {torch.__version__}, {path}"


# ---------------------------------------------------------------------------
# Models: the same architectures and losses as the JAX benchmarks, float32.
# ---------------------------------------------------------------------------


def _mse(out, target):
  """Mean over examples of the squared error summed over outputs."""
  err = (out - target) ** 2
  return (err.sum(-1) if err.ndim > 1 else err).mean()


def _build(torch, problem, data, device):
  """(model, loss(model, x, y), x, y, init description) for one problem."""
  nn = torch.nn
  x = torch.as_tensor(np.asarray(data["x"]), device=device)
  y = torch.as_tensor(np.asarray(data["y"]), device=device)
  if problem == "sine":

    class Sine(nn.Module):
      def __init__(self, hidden=30):
        super().__init__()
        self.w = nn.Parameter(0.1 * torch.randn(hidden))
        self.b = nn.Parameter(0.1 * torch.randn(hidden))
        self.a = nn.Parameter(0.1 * torch.randn(hidden))

      def forward(self, theta):
        return torch.tanh(theta[:, None] * self.w + self.b) @ self.a

    model = Sine()
    return model, lambda m, x, y: _mse(m(x), y), x, y, "w, b, a ~ 0.1 N(0, 1)"
  if problem == "mlp":
    model = nn.Sequential(
        nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 10),
        nn.Softmax(dim=-1),
    )
    for mod in model:  # flax's default: lecun_normal kernels, zero biases
      if isinstance(mod, nn.Linear):
        s = (1.0 / mod.in_features) ** 0.5 / 0.87962566  # truncated at +-2 s
        nn.init.trunc_normal_(mod.weight, std=s, a=-2 * s, b=2 * s)
        nn.init.zeros_(mod.bias)
    return model, lambda m, x, y: _mse(m(x), y), x, y, "lecun_normal kernels, zero biases"
  if problem == "deep":
    depth = int(data.get("depth", 32))
    layers, width = [], 1
    for _ in range(depth - 2):
      layers += [nn.Linear(width, 4), nn.Tanh()]
      width = 4
    layers += [nn.Linear(width, 10), nn.Tanh(), nn.Linear(10, 1)]
    model = nn.Sequential(*layers)
    for mod in model:
      if isinstance(mod, nn.Linear):
        nn.init.normal_(mod.weight, std=1e-2)
        nn.init.normal_(mod.bias, std=1e-2)
    if x.ndim == 1:
      x = x[:, None]
    if y.ndim == 1:
      y = y[:, None]
    return model, lambda m, x, y: _mse(m(x), y), x, y, f"depth {depth}, all ~ N(0, 1e-4)"
  if problem == "rnn":

    class RNN(nn.Module):
      def __init__(self, hidden=32):
        super().__init__()
        self.rnn = nn.RNN(2, hidden, num_layers=1, nonlinearity="tanh", batch_first=True)
        self.linear = nn.Linear(hidden, 2)

      def forward(self, x):
        _, h = self.rnn(x)  # h: (1, batch, hidden), the final hidden state
        return self.linear(h[-1])

    y = y.long()
    loss = lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y)
    return RNN(), loss, x, y, "torch defaults"
  raise ValueError(f"unknown problem {problem!r}; one of {PROBLEMS}")


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def time_per_step(problem: str, data: dict, *, steps: int, repeats: int,
                  amc_dir: str | None = None, minibatch: int | None = None,
                  sigma0=1e-2, epsilon=0.1, n_reset=100, seed=0,
                  threads: int | None = None, device: str = "cpu") -> dict:
  """Median seconds per optimizer step of the authors' aMC optimizer in
  PyTorch over `repeats` timed runs of `steps` steps each, after a warm-up run.

  Every timed run starts from the state the warm-up run left (parameters,
  sigma, mu, counter, cached loss, random-number generators), so all runs do
  the same work. ``threads`` (default ``os.cpu_count()``) is passed to
  ``torch.set_num_threads`` for the measurement and restored afterwards.

  Returns {"seconds_per_step": float, "all_runs": [...], "torch": version,
  "threads": n, ...}; raises RuntimeError when ``available`` would say no.
  """
  torch, aMC, path = _load(amc_dir)
  old_threads = torch.get_num_threads()
  threads = int(threads or os.cpu_count() or 1)
  torch.set_num_threads(threads)
  try:
    return _time(torch, aMC, path, problem, data, steps, repeats, minibatch,
                 sigma0, epsilon, n_reset, seed, threads, device)
  finally:
    torch.set_num_threads(old_threads)


def _time(torch, aMC, path, problem, data, steps, repeats, minibatch, sigma0, epsilon,
          n_reset, seed, threads, device):
  torch.manual_seed(seed)
  model, loss_fn, x, y, init = _build(torch, problem, data, device)
  model = model.to(device)
  n = x.shape[0]
  if minibatch is not None and not 0 < minibatch:
    raise ValueError(f"minibatch must be positive, got {minibatch}")
  optimizer = aMC(model.parameters(), init_sigma=sigma0, epsilon=epsilon,
                  n_reset=n_reset, minibatch=minibatch is not None)
  params = list(model.parameters())
  state = optimizer.state[params[0]]  # their optimizer keeps its global state here
  gen = torch.Generator(device=device)
  gen.manual_seed(seed + 1)
  cuda = torch.device(device).type == "cuda"

  if minibatch is None:
    closure = lambda: loss_fn(model, x, y)

    def run(k):
      for _ in range(k):
        optimizer.step(closure)
  else:

    def run(k):
      for _ in range(k):
        idx = torch.randint(n, (minibatch,), generator=gen, device=device)
        xb, yb = x[idx], y[idx]
        optimizer.step(lambda: loss_fn(model, xb, yb))

  def timed(k):
    with torch.no_grad():
      if cuda:
        torch.cuda.synchronize()
      t0 = time.perf_counter()
      run(k)
      if cuda:
        torch.cuda.synchronize()
      return time.perf_counter() - t0

  warmup = timed(steps)

  # Snapshot of everything a run changes, restored before each timed run.
  with torch.no_grad():
    saved = {
        "params": [p.detach().clone() for p in params],
        "mus": [m.clone() for m in state["mus"]],
        "sigma": state["sigma"],
        "n_cr": state["n_cr"],
        "best_loss": state.get("best_loss"),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if cuda else None,
        "gen": gen.get_state(),
    }

  def restore():
    with torch.no_grad():
      for p, s in zip(params, saved["params"]):
        p.copy_(s)
      for m, s in zip(state["mus"], saved["mus"]):
        m.copy_(s)
      state["sigma"], state["n_cr"] = saved["sigma"], saved["n_cr"]
      if "best_loss" in state:
        state["best_loss"] = saved["best_loss"]
      torch.set_rng_state(saved["rng"])
      if cuda:
        torch.cuda.set_rng_state(saved["cuda_rng"])
      gen.set_state(saved["gen"])

  runs = []
  for _ in range(repeats):
    restore()
    runs.append(timed(steps))

  # One more run from the same start, untimed and instrumented: the timed
  # runs made exactly these moves.
  restore()
  with torch.no_grad():
    loss_start = float(loss_fn(model, x, y))
    accepted = resets = 0
    step_one = lambda: run(1)
    for _ in range(steps):
      sigma = state["sigma"]
      step_one()
      if state["sigma"] != sigma:
        resets += 1
      elif state["n_cr"] == 0:
        accepted += 1
    loss_end = float(loss_fn(model, x, y))

  seconds = statistics.median(runs) / steps
  return {
      "seconds_per_step": seconds,
      "us_per_step": seconds * 1e6,
      "all_runs": [t / steps for t in runs],
      "min_seconds_per_step": min(runs) / steps,
      "warmup_seconds_per_step": warmup / steps,
      "steps_per_run": steps,
      "repeats": repeats,
      "problem": problem,
      "init": init,
      "n_params": int(sum(p.numel() for p in params)),
      "n_examples": int(n),
      "minibatch": minibatch,
      "loss_evaluations_per_step": 1 if minibatch is None else 2,
      "hyperparameters": {"init_sigma": sigma0, "epsilon": epsilon, "n_reset": n_reset,
                          "sigma_decay": 0.95, "beta": "inf", "seed": seed},
      "accepted_fraction": accepted / steps,
      "resets": resets,
      "full_data_loss_start_end": [loss_start, loss_end],
      "torch": torch.__version__,
      "threads": torch.get_num_threads(),
      "threads_how": "torch.set_num_threads(os.cpu_count())"
                     if threads == (os.cpu_count() or 1) else f"torch.set_num_threads({threads})",
      "interop_threads": torch.get_num_interop_threads(),
      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp default, active)"),
      "device": device,
      "amc_optimizer_py": str(path),
  }


# ---------------------------------------------------------------------------
# Synthetic data of the benchmark shapes, and the command line.
# ---------------------------------------------------------------------------


def synthetic_data(problem, *, n=None, length=196, depth=32, seed=0):
  """NumPy float32 data of the right shapes (random images and labels)."""
  rng = np.random.default_rng(seed)
  if problem == "sine":
    theta = np.arange(1000, dtype=np.float32) / 1000
    return {"x": theta, "y": np.sin(2 * np.pi * theta).astype(np.float32)}
  if problem == "mlp":
    n = n or 60_000
    x = rng.random((n, 784), dtype=np.float32)
    return {"x": x, "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]}
  if problem == "deep":
    theta = np.arange(1000, dtype=np.float32) / 1000
    target = np.where((theta > 0.5) & (theta < 0.75), 0.5, 0.0).astype(np.float32)
    return {"x": theta[:, None], "y": target[:, None], "depth": depth}
  if problem == "rnn":
    n = n or 1500
    pixels = rng.integers(0, 2, (n, length))
    return {"x": np.eye(2, dtype=np.float32)[pixels],
            "y": rng.integers(0, 2, n).astype(np.int64)}
  raise ValueError(f"unknown problem {problem!r}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--amc-torch-dir", default=None,
                      help=f"checkout of reproducible-science/aMC (default: ${ENV_VAR})")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--scale", type=float, default=1.0,
                      help="multiplies the number of steps per run of every case")
  parser.add_argument("--threads", type=int, default=None)
  parser.add_argument("--only", nargs="*", default=None,
                      help="case names to run (default: all)")
  args = parser.parse_args(argv)
  ok, why = available(args.amc_torch_dir)
  if not ok:
    print(f"PyTorch reference unavailable: {why}")
    return 1
  print(f"PyTorch reference: {why}")
  cases = [  # name, problem, data, minibatch, steps per run
      ("sine", "sine", synthetic_data("sine"), None, 2000),
      ("mlp full (60000)", "mlp", synthetic_data("mlp"), None, 40),
      ("mlp minibatch 2000", "mlp", None, 2000, 400),
      ("deep 32", "deep", synthetic_data("deep"), None, 1000),
      ("rnn (1500, T=196)", "rnn", synthetic_data("rnn"), None, 20),
  ]
  results = {}
  print(f"{'case':24s} {'us/step':>11s} {'min':>11s} {'accepted':>9s} {'steps':>6s}")
  for name, problem, data, minibatch, steps in cases:
    if args.only and not any(o in name for o in args.only):
      continue
    if data is None:
      data = next(c[2] for c in cases if c[1] == problem and c[2] is not None)
    r = time_per_step(problem, data, steps=max(1, int(steps * args.scale)),
                      repeats=args.repeats, amc_dir=args.amc_torch_dir,
                      minibatch=minibatch, threads=args.threads)
    results[name] = r
    print(f"{name:24s} {r['us_per_step']:11.1f} {r['min_seconds_per_step'] * 1e6:11.1f}"
          f" {r['accepted_fraction']:9.3f} {r['steps_per_run']:6d}", flush=True)
  first = next(iter(results.values()), None)
  if first:
    print(f"torch {first['torch']}, {first['threads']} threads ({first['threads_how']}),"
          f" OMP_WAIT_POLICY={first['omp_wait_policy']},"
          f" median of {args.repeats} runs after a warm-up run")
  return 0


if __name__ == "__main__":
  sys.exit(main())
