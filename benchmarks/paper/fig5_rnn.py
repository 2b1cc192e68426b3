"""Fig. 5 of Whitelam et al. (2022): aMC trains a simple RNN on long sequences.

The paper: a two-layer tanh RNN (hidden 64) reads binarised MNIST 0s and 1s
one pixel per step (a one-hot vector of 2; sequences of 784), its final hidden
state goes to a linear classifier, cross-entropy loss, minibatches of 1500.
GD and Adam (lr 1e-3, gradient clipping; a search over lr 1e-5..1 did not
help) fail to train; aMC (sigma0 = 1e-3, n_s = 100, epsilon = 0) reaches
99.8 % test accuracy. Panel (c): |grad U| along the aMC trajectory is small
(|grad U| << U) on the initial plateau and large (|grad U| >> U) after it.

Here, at the reduced size that 2 CPU cores allow (see
``/work/shared/REPRODUCTION-NOTES.md``):

* Data (default ``--data digits``): scikit-learn's ``load_digits``, classes 0
  and 1 (360 images), each 8x8 image upsampled x2 (nearest) to 16x16,
  binarised (pixel > 7 of 16), plus one blank row appended: sequences of 272
  pixels whose last 16 steps are blank for every image (like MNIST's blank
  border). A fixed 75/25 train/test split (270/90). ``--data mnist`` (implied
  by ``--data-dir``) uses MNIST-format IDX files instead (classes 0 and 1;
  for the default Fashion-MNIST that is T-shirt vs trouser, not digits):
  28x28 images are average-pooled 2x2 to 14x14 and binarised (> 127),
  sequences of 196; ``--mnist-train`` training images (default 2000) and all
  test images of the two classes.
* Model: ``--layers`` stacked tanh RNN layers (default 1; the paper has 2) of
  ``--hidden`` units (default 32; the paper 64); final hidden state -> linear
  -> 2 logits; softmax cross-entropy. One pixel per step as a one-hot of 2.
* Inits, stated per run: "paper" = every parameter ~ N(0, 1e-6) (std 1e-3,
  the paper's x_i ~ N(0, sigma0^2) with sigma0 = 1e-3), used by every method
  and the same draw for chain k of every method; "fan_in" = every weight
  ~ N(0, 1/fan_in), biases 0 (a standard init), for Adam only.
* Methods, all through ``amc_jax.fit`` on minibatches of ``--batch-size``
  (64; the paper's 1500 is more than the 270 training sequences):

  - GD: ``optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr))`` and
    Adam: ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))``
    with the paper's lr 1e-3 (``--grad-seeds`` seeds) and a small lr sweep
    (``--gd-lrs``, ``--adam-lrs``; one seed each), paper init. The lrs of a
    sweep run as the chains of one ``fit`` (``optax.inject_hyperparams``
    with a per-chain learning rate in the optimizer state).
  - Adam lr 1e-3 with the fan_in init (``--grad-seeds`` seeds).
  - aMC (minibatch mode, epsilon = 0, n_reset = 100), paper init, with the
    notes' sigma0 = 1e-2 (``--seeds`` seeds, ``--steps`` steps) and the
    paper's sigma0 = 1e-3 (``--seeds`` seeds, ``--steps-paper-sigma``
    steps: its escape from the plateau takes ~1/(sigma0^2 H) accepted moves,
    so it gets a longer run).

  Every ``--eval-every`` steps an ``eval_fn`` computes, per chain, the
  full-training-set loss U, |grad U| (``jax.grad``; a diagnosis, no optimizer
  uses it), and the test accuracy. "Best checkpoint" is the evaluated point
  with the lowest full-training-set loss (selected without the test set); its
  test accuracy is reported beside the final one, since long aMC runs with
  sigma0 = 1e-2 can drift back into a chaotic regime.

  python -m benchmarks.paper.fig5_rnn [--quick] [--out-dir DIR] [--data-dir DIR]

Writes ``paper_fig5_rnn.json`` and ``.png`` (loss, test accuracy, and |grad U|
along aMC) into ``--out-dir``. ``--quick`` (the test suite's smoke test) uses
the 8x8 images without upsampling (sequences of 72), 50 steps, one chain per
method, and compiles with ``--xla_backend_optimization_level=0`` (it is mostly
compilation). ``--plot-from FILE.json`` only redraws the plot of a JSON.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np

from benchmarks._rnn import TRAINED, load_data, make_model, summarize
from benchmarks.paper import _paper

NAME = "fig5_rnn"
N_RESET, EPSILON = 100, 0.0
PAPER_SIGMA0, NOTES_SIGMA0 = 1e-3, 1e-2
PAPER_LR = 1e-3
CLIP = 1.0

PAPER_CLAIM = (
    "Fig. 5 (a, b): a simple two-layer tanh RNN (hidden 64) classifying binarised MNIST 0s vs 1s "
    "fed one pixel per step (sequence length 784), minibatch 1500: GD and Adam (lr 1e-3, gradient "
    "clipping; lrs 1e-5..1 tried) fail to train (loss stays at ln 2), aMC (sigma0 = 1e-3, n_s = 100, "
    "epsilon = 0) trains to 99.8% test accuracy. Fig. 5 (c): along the aMC trajectory |grad U| "
    "changes by about three orders of magnitude between a small-gradient plateau (|grad U| << U) "
    "and a large-gradient regime (|grad U| >> U) in which aMC keeps training."
)
INITS = {
    "paper": "every weight and bias ~ N(0, 1e-6) (std 1e-3), the paper's x_i ~ N(0, sigma0^2)",
    "fan_in": "every weight ~ N(0, 1/fan_in) (input 1/2, recurrent and readout 1/hidden), biases 0",
}


def parse_args(argv=None):
  p = _paper.parser(__doc__)
  _paper.add_data_dir(p)
  p.add_argument("--data", choices=("digits", "mnist"), default=None,
                 help="digits: scikit-learn load_digits (default); mnist: MNIST-format IDX "
                      "files (implied by --data-dir)")
  p.add_argument("--mnist-train", type=int, default=2000,
                 help="training images of classes 0/1 used with --data mnist")
  p.add_argument("--layers", type=int, default=1, help="stacked RNN layers (paper: 2)")
  p.add_argument("--hidden", type=int, default=32, help="hidden units per layer (paper: 64)")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--steps", type=int, default=None,
                 help="steps of GD, Adam and aMC sigma0=1e-2 (full 5000, quick 50)")
  p.add_argument("--steps-paper-sigma", type=int, default=None,
                 help="steps of aMC with the paper's sigma0=1e-3 (full 60000, quick 50)")
  p.add_argument("--seeds", type=int, default=None, help="aMC sigma0=1e-2 chains (full 4, quick 1)")
  p.add_argument("--seeds-paper-sigma", type=int, default=None,
                 help="aMC sigma0=1e-3 chains (full 2, quick 1)")
  p.add_argument("--grad-seeds", type=int, default=None,
                 help="chains of GD/Adam at lr 1e-3 and of Adam fan_in (full 2, quick 1)")
  p.add_argument("--gd-lrs", type=float, nargs="*", default=None,
                 help="extra GD lrs, one chain each (full 1e-2 1e-1 1, quick none)")
  p.add_argument("--adam-lrs", type=float, nargs="*", default=None,
                 help="extra Adam lrs, one chain each (full 1e-4 1e-2 1e-1, quick none)")
  p.add_argument("--eval-every", type=int, default=None, help="(full 250, quick 25)")
  p.add_argument("--seed", type=int, default=0, help="base seed (inits, minibatches, aMC keys)")
  p.add_argument("--plot-from", type=pathlib.Path, default=None,
                 help="only redraw the plot of this JSON (as the same name with .png)")
  p.add_argument("--pool", type=int, choices=(1, 2, 4), default=None,
                 help="--data mnist: average-pool 28x28 images by this factor (1: the paper's "
                      "784-pixel sequences; default 2, quick 4)")
  p.add_argument("--binarise-above", type=float, default=127.0,
                 help="--data mnist: pixel (0-255) threshold (default 127; the authors' "
                      "mnist_rnn.py uses x > 0.25, i.e. 63.75)")
  p.add_argument("--runs", nargs="+", default=None,
                 choices=("gd", "adam", "adam_fan_in", "amc_sigma1e-2", "amc_sigma1e-3"),
                 help="a subset of the runs (default all)")
  p.add_argument("--name", default=NAME, help=f"JSON/PNG name paper_<name> (default {NAME})")
  p.add_argument("--checkpoint-dir", type=pathlib.Path, default=None,
                 help="run each method in segments of --segment-steps, checkpointed here "
                      "(amc_jax.save_checkpoint) and resumed on a rerun; minibatches then "
                      "come from fold_in(seed, segment)")
  p.add_argument("--segment-steps", type=int, default=5000,
                 help="steps per checkpointed segment (a multiple of --eval-every)")
  p.add_argument("--max-wall", type=float, default=None,
                 help="with --checkpoint-dir: stop (checkpointed) after this many seconds")
  args = p.parse_args(argv)
  full = dict(steps=5000, steps_paper_sigma=60000, seeds=4, seeds_paper_sigma=2, grad_seeds=2,
              gd_lrs=[1e-2, 1e-1, 1.0], adam_lrs=[1e-4, 1e-2, 1e-1], eval_every=250)
  quick = dict(steps=50, steps_paper_sigma=50, seeds=1, seeds_paper_sigma=1, grad_seeds=1,
               gd_lrs=[], adam_lrs=[], eval_every=25)
  for k, v in (quick if args.quick else full).items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.data is None:
    args.data = "mnist" if args.data_dir is not None else "digits"
  for name in ("steps", "steps_paper_sigma"):
    if getattr(args, name) % args.eval_every:
      p.error(f"--{name.replace('_', '-')} must be a multiple of --eval-every")
  if args.segment_steps % args.eval_every:
    p.error("--segment-steps must be a multiple of --eval-every")
  if args.pool is None:
    args.pool = 4 if args.quick else 2
  args.runs = args.runs or ["gd", "adam", "adam_fan_in", "amc_sigma1e-2", "amc_sigma1e-3"]
  return args


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def main(argv=None):
  args = parse_args(argv)
  if args.plot_from is not None:
    record = json.loads(args.plot_from.read_text())
    runs = {name: {k: _floats(v) if k in _ARRAYS else v for k, v in r.items()}
            for name, r in record["runs"].items()}
    plot(runs, record["config"]["sequence_length"], args.plot_from.with_suffix(".png"))
    print(f"plot {args.plot_from.with_suffix('.png')}")
    return
  timer = _paper.Timer()
  _paper.start(args)  # a smoke test is mostly compilation (before JAX starts)
  import jax

  import amc_jax
  import jax.numpy as jnp
  import optax

  data = load_data(args)
  length = data["x_train"].shape[1]
  train = (jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"]))
  test = (jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"]))
  init, logits, loss_fn = make_model(args.layers, args.hidden)
  print(f"{data['description']}\nsequence length {length}, train {len(train[0])}, "
        f"test {len(test[0])}, {args.layers} layer(s) of {args.hidden}", flush=True)

  @jax.jit
  def evaluate(chain_params):
    def one(p):
      u, g = jax.value_and_grad(loss_fn)(p, train)
      gnorm = jnp.sqrt(sum(jnp.sum(v.astype(jnp.float32) ** 2) for v in jax.tree.leaves(g)))
      acc = jnp.mean(jnp.argmax(logits(p, test[0]), -1) == test[1])
      wh_rms = jnp.sqrt(jnp.mean(p["wh0"] ** 2))  # the recurrent weights' random walk
      return {"train_loss": u, "grad_norm": gnorm, "test_acc": acc, "wh0_rms": wh_rms}
    return jax.vmap(one)(chain_params)

  def inits(kind, n, offset=0):
    keys = [jax.random.fold_in(jax.random.key(args.seed), 1000 + offset + i) for i in range(n)]
    return jax.vmap(lambda k: init(k, kind))(jnp.stack(keys))

  def concat(*trees):
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)

  log_every = math.gcd(args.eval_every, 50)
  runs = {}

  clock = _paper.Timer()

  def run(name, tx, params, steps, chain_info, opt_state=None, kind="gradient", **config):
    if name not in args.runs:
      return
    t = _paper.Timer()
    first = jax.device_get(evaluate(params))
    if args.checkpoint_dir is not None:
      seg = args.segment_steps
      segs = [(min(seg, steps - i), args.eval_every) for i in range(0, steps, seg)]
      *_, h, done, compute = _paper.resumable_fit(
          tx, params, loss_fn, train, segments=segs, checkpoint=args.checkpoint_dir / name,
          opt_state=opt_state, n_chains=len(chain_info), key=args.seed, log_every=log_every,
          eval_fn=evaluate, batch_size=args.batch_size, sequential=False, max_wall=args.max_wall, clock=clock,
          label=name)
      if h is None:
        return
      steps = done
    else:
      # The paper's minibatch mode (fixed-size minibatches), not the sequential test.
      result = amc_jax.fit(tx, params, loss_fn, train, steps=steps, batch_size=args.batch_size,
                           sequential=False,
                           key=args.seed, opt_state=opt_state, n_chains=len(chain_info),
                           log_every=log_every, eval_fn=evaluate, eval_every=args.eval_every,
                           progress=False)
      h = result.history
      compute = None
    ev = {k: np.concatenate([np.asarray(first[k])[None], np.asarray(v)]) for k, v in h["eval"].items()}
    eval_steps = np.concatenate([[0], h["eval_step"]])
    rec = {
        "kind": kind, "steps": steps, "chains": chain_info, **config,
        "wall_s": t() if compute is None else compute,
        "eval_step": eval_steps,
        "train_loss": ev["train_loss"].T,  # [chains, evals], full training set
        "grad_norm": ev["grad_norm"].T,
        "test_acc": ev["test_acc"].T,
        "wh0_rms": ev["wh0_rms"].T,  # RMS of the first layer's recurrent weights
        "minibatch_loss_step": h["step"],
        "minibatch_loss": np.asarray(h["loss"]).T,
    }
    if kind == "amc":
      rec["acceptance"] = np.asarray(h["acceptance"]).T
      rec["sigma"] = np.asarray(h["sigma"]).T
      rec["final_sigma"] = np.asarray(h["sigma"][-1])
      rec["mean_acceptance"] = np.nanmean(np.asarray(h["acceptance"]), axis=0)
    rec.update(summarize(ev, eval_steps))
    runs[name] = rec
    print(f"{name:14s} {rec['wall_s']:6.1f}s  best-checkpoint test acc "
          f"{np.round(rec['best_test_acc'], 3).tolist()}  final "
          f"{np.round(rec['final_test_acc'], 3).tolist()}", flush=True)

  def sweep(opt, lrs_seeds, kind_init="paper"):
    """One fit whose chains have their own learning rate (inject_hyperparams)."""
    tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.inject_hyperparams(opt)(learning_rate=PAPER_LR))
    params = concat(*[inits(kind_init, 1, offset=s) for _, s in lrs_seeds])
    state = jax.vmap(tx.init)(params)
    lr = jnp.asarray([l for l, _ in lrs_seeds], jnp.float32)
    inner = state[1]
    state = (state[0], inner._replace(hyperparams={**inner.hyperparams, "learning_rate": lr}))
    chains = [{"lr": l, "seed": s, "init": kind_init} for l, s in lrs_seeds]
    return tx, params, state, chains

  grad_config = {"optimizer": None, "clip_by_global_norm": CLIP, "batch_size": args.batch_size}
  # GD and Adam, paper init: lr 1e-3 for grad_seeds seeds, plus the sweep, one seed each.
  for opt_name, opt, extra in (("gd", optax.sgd, args.gd_lrs), ("adam", optax.adam, args.adam_lrs)):
    lrs_seeds = [(PAPER_LR, s) for s in range(args.grad_seeds)] + [(l, 0) for l in extra]
    tx, params, state, chains = sweep(opt, lrs_seeds)
    run(opt_name, tx, params, args.steps, chains, opt_state=state, init="paper",
        **{**grad_config, "optimizer": f"optax.chain(optax.clip_by_global_norm({CLIP}), "
                                       f"optax.{opt.__name__}(lr))"})
  # Adam, standard fan_in init.
  tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(PAPER_LR))
  run("adam_fan_in", tx, inits("fan_in", args.grad_seeds), args.steps,
      [{"lr": PAPER_LR, "seed": s, "init": "fan_in"} for s in range(args.grad_seeds)],
      init="fan_in", **{**grad_config, "optimizer": f"optax.chain(optax.clip_by_global_norm({CLIP}), "
                                                    f"optax.adam({PAPER_LR}))"})
  # aMC, paper init, minibatch mode, the notes' sigma0 and the paper's.
  for name, sigma0, steps, seeds in (
      ("amc_sigma1e-2", NOTES_SIGMA0, args.steps, args.seeds),
      ("amc_sigma1e-3", PAPER_SIGMA0, args.steps_paper_sigma, args.seeds_paper_sigma)):
    tx = amc_jax.amc(sigma0, EPSILON, N_RESET, minibatch=True, seed=args.seed)
    run(name, tx, inits("paper", seeds), steps,
        [{"seed": s, "init": "paper"} for s in range(seeds)], kind="amc", init="paper",
        sigma0=sigma0, epsilon=EPSILON, n_reset=N_RESET, minibatch=True, batch_size=args.batch_size,
        call=f"amc_jax.amc({sigma0}, {EPSILON}, {N_RESET}, minibatch=True, seed={args.seed})")

  wall = timer()
  verdict = (make_verdict(runs, length, args) if set(runs) == set(_ALL_RUNS)
             else make_verdict_subset(runs, length, args))
  print(verdict)
  json_path, png_path = _paper.paths(args.out_dir, args.name)
  record = {
      "name": NAME,
      "paper_claim": PAPER_CLAIM,
      "quick": bool(args.quick),
      "wall_s": wall,
      "config": {
          "data": data["description"], "data_source": data["source"], "sequence_length": length,
          "n_train": len(data["x_train"]), "n_test": len(data["x_test"]),
          "test_class_fraction_1": float(np.mean(data["y_test"])),
          "input": "one pixel per step, one-hot of 2",
          "model": f"{args.layers}-layer tanh RNN (stacked), hidden {args.hidden}, final hidden state "
                   "-> linear -> 2 logits, softmax cross-entropy",
          "layers": args.layers, "hidden": args.hidden, "batch_size": args.batch_size,
          "inits": INITS, "seed": args.seed,
          "steps": args.steps, "steps_paper_sigma": args.steps_paper_sigma,
          "eval_every": args.eval_every, "log_every": log_every,
          "best_checkpoint": "the evaluated point (every eval_every steps, and step 0) with the "
                             "lowest loss on the full training set; no test data in the choice",
          "trained_threshold": TRAINED,
          "dtype": "float32",
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "runs": args.runs, "pool": args.pool if args.data == "mnist" else None,
          "binarise_above": args.binarise_above if args.data == "mnist" else None,
          "segments": (None if args.checkpoint_dir is None else
                       f"fit in checkpointed segments of {args.segment_steps} steps; segment i"
                       f" draws minibatches from fold_in(key {args.seed}, i)"),
          "deviations_from_paper": (
              "reduced size for 2 CPU cores: sklearn digits (or pooled MNIST-format data) instead of "
              "784-pixel MNIST, sequence length " + str(length) + f", {args.layers} layer(s) of "
              f"{args.hidden} instead of 2 of 64, minibatch {args.batch_size} instead of 1500 "
              "(270 training sequences), far fewer steps; aMC also with sigma0 = 1e-2"),
      },
      "summary": {
          name: [{**chain, "best_step": int(r["best_step"][i]),
                  "best_test_acc": float(r["best_test_acc"][i]),
                  "final_test_acc": float(r["final_test_acc"][i]),
                  "final_train_loss": float(r["final_train_loss"][i])}
                 for i, chain in enumerate(r["chains"])]
          for name, r in runs.items()},
      "runs": runs,
      "verdict": verdict,
      "plot": None if args.no_plot else str(png_path.name),
  }
  _paper.write(json_path, record)
  if not args.no_plot:
    plot(runs, length, png_path)
  print(f"total {timer():.0f}s" + ("" if args.no_plot else f", plot {png_path}"))


_ARRAYS = ("eval_step", "train_loss", "grad_norm", "test_acc", "wh0_rms")
_ALL_RUNS = ("gd", "adam", "adam_fan_in", "amc_sigma1e-2", "amc_sigma1e-3")


def make_verdict_subset(runs: dict, length: int, args) -> str:
  """The verdict of a run of some of the methods: per run, who trained and Fig. 5c."""
  parts = [("quick smoke test, not evidence: " if args.quick else "")
           + f"Sequence length {length}, {args.layers}x{args.hidden} tanh RNN, minibatch "
           f"{args.batch_size}; runs {sorted(runs)} only."]
  for name, r in runs.items():
    acc = np.asarray(r["best_test_acc"])
    n_ok = int(np.sum(acc >= TRAINED))
    g = np.asarray(r["grad_norm"], np.float64)
    line = (f"{name} ({r['init']} init, {r['steps']} steps): {n_ok} of {len(acc)} chains reach "
            f"{TRAINED:.0%} (best-checkpoint test accuracy "
            + ", ".join(f"{a:.3f}" for a in acc) + "; final "
            + ", ".join(f"{a:.3f}" for a in r["final_test_acc"]) + ")")
    if r["kind"] == "amc":
      wh = np.asarray(r["wh0_rms"], np.float64)
      line += (f"; mean acceptance {np.mean(r['mean_acceptance']):.2f}; RMS recurrent weight "
               f"{np.mean(wh[:, 0]):.1e} -> {np.mean(wh[:, -1]):.1e} (memory needs ~1/sqrt(H) = "
               f"{1 / math.sqrt(args.hidden):.2f}); |grad U| {np.nanmedian(g[:, 0]):.1e} at the "
               f"start, max {np.nanmax(np.where(np.isfinite(g), g, np.nan)):.1e}")
    parts.append(line + ".")
  amc = [n for n in runs if runs[n]["kind"] == "amc"]
  grad = [n for n in runs if runs[n]["kind"] != "amc" and runs[n]["init"] == "paper"]
  amc_ok = any(np.max(runs[n]["best_test_acc"]) >= TRAINED for n in amc)
  grad_fail = all(np.max(runs[n]["best_test_acc"]) < TRAINED for n in grad)
  if amc and grad:
    parts.append("aMC trains where GD/Adam from the same init do not." if amc_ok and grad_fail
                 else "GD/Adam from the paper's init fail, and aMC has not (yet) trained in "
                      "these steps." if grad_fail else "Not reproduced in this configuration.")
  return " ".join(parts)


def _floats(value):
  """JSON lists (with "inf"/"nan" strings for non-finite numbers) as a float array."""
  return np.asarray(value, dtype=np.float64)


def make_verdict(runs: dict, length: int, args) -> str:
  def trained(name):
    acc = np.asarray(runs[name]["best_test_acc"])
    return int(np.sum(acc >= TRAINED)), len(acc)

  def accs(name, key="best_test_acc"):
    return ", ".join(f"{a:.3f}" for a in runs[name][key])

  grad_paper = [(n, c["lr"], a) for n in ("gd", "adam")
                for c, a in zip(runs[n]["chains"], runs[n]["best_test_acc"])]
  grad_max = max(a for _, _, a in grad_paper)
  n_fail = sum(a < TRAINED for _, _, a in grad_paper)
  s2, n2 = trained("amc_sigma1e-2")
  s3, n3 = trained("amc_sigma1e-3")
  fan, nfan = trained("adam_fan_in")
  lrs_gd = sorted({c["lr"] for c in runs["gd"]["chains"]})
  lrs_adam = sorted({c["lr"] for c in runs["adam"]["chains"]})
  g2 = np.asarray(runs["amc_sigma1e-2"]["grad_norm"], np.float64)
  plateau = g2[:, 0]
  after = np.where(np.isfinite(g2), g2, np.nan)
  size = "quick smoke test, not evidence: " if args.quick else ""
  parts = [
      f"{size}Sequence length {length}, {args.layers}x{args.hidden} tanh RNN, paper init N(0, 1e-6) "
      f"for every method. Gradient methods: {n_fail} of {len(grad_paper)} GD/Adam chains "
      f"(GD lrs {lrs_gd}, Adam lrs {lrs_adam}, clipped at {CLIP}) stay below {TRAINED:.0%} test "
      f"accuracy (best {grad_max:.3f}) in {args.steps} steps.",
      f"aMC sigma0 = 1e-2 (minibatch mode): {s2} of {n2} chains train; best-checkpoint test "
      f"accuracy {accs('amc_sigma1e-2')}, final {accs('amc_sigma1e-2', 'final_test_acc')}.",
      f"aMC with the paper's sigma0 = 1e-3: {s3} of {n3} chains train in {args.steps_paper_sigma} "
      f"steps (best-checkpoint {accs('amc_sigma1e-3')}, final "
      f"{accs('amc_sigma1e-3', 'final_test_acc')}); its plateau escape needs ~1/(sigma0^2 H) = "
      f"{1 / (PAPER_SIGMA0 ** 2 * args.hidden):.0f} accepted moves (mean acceptance here "
      f"{np.mean(runs['amc_sigma1e-3']['mean_acceptance']):.2f}); the RMS recurrent weight random-"
      f"walked from {np.mean(np.asarray(runs['amc_sigma1e-3']['wh0_rms'])[:, 0]):.1e} to "
      f"{np.mean(np.asarray(runs['amc_sigma1e-3']['wh0_rms'])[:, -1]):.1e} (memory needs ~1/sqrt(H) "
      f"= {1 / math.sqrt(args.hidden):.2f}).",
      f"Adam with a standard 1/fan_in init: {fan} of {nfan} chains train (best-checkpoint "
      f"{accs('adam_fan_in')})" + (
          ": the gradient methods' failure here is the tiny init's vanishing gradient, which "
          "aMC's random walk escapes." if fan else "."),
      f"Fig. 5c: along aMC sigma0 = 1e-2, |grad U| starts at {np.nanmedian(plateau):.1e} "
      f"(U = ln 2 = 0.693) and reaches {np.nanmax(after):.1e}"
      + (f"; {int(np.sum(~np.isfinite(g2)))} evaluated points have non-finite |grad U|"
         if np.any(~np.isfinite(g2)) else "") + ".",
  ]
  reproduced = s2 > 0 and n_fail == len(grad_paper)
  parts.append(
      ("Reproduced at reduced size (qualitatively): aMC trains where GD/Adam from the same init do "
       "not" + ("" if s3 else "; with the paper's sigma0 = 1e-3 only when given enough steps, which "
                "this run did not have") + "."
       if reproduced else "Not reproduced in this configuration."))
  return " ".join(parts)


def plot(runs: dict, length: int, path: pathlib.Path) -> None:
  plt = _paper.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
  styles = {
      "gd": dict(color="0.5", label="GD + clip, paper init"),
      "adam": dict(color="tab:blue", label="Adam + clip, paper init"),
      "adam_fan_in": dict(color="tab:orange", label="Adam + clip lr 1e-3, fan_in init"),
      "amc_sigma1e-2": dict(color="tab:green", label="aMC sigma0=1e-2, paper init"),
      "amc_sigma1e-3": dict(color="darkgreen", ls="--", label="aMC sigma0=1e-3, paper init"),
  }
  for name, rec in runs.items():
    st = dict(styles[name])
    label = st.pop("label")
    steps = np.asarray(rec["eval_step"])
    for i, chain in enumerate(rec["chains"]):
      lw = 1.6 if chain.get("lr", PAPER_LR) == PAPER_LR else 0.7
      lab = label if i == 0 else None
      axes[0].plot(steps, rec["train_loss"][i], lw=lw, label=lab, **st)
      axes[1].plot(steps, rec["test_acc"][i], lw=lw, label=lab, **st)
  for name in ("amc_sigma1e-2", "amc_sigma1e-3"):
    if name not in runs:
      continue
    rec = runs[name]
    st = dict(styles[name])
    label = st.pop("label")
    steps = np.asarray(rec["eval_step"])
    for i in range(len(rec["chains"])):
      g = np.asarray(rec["grad_norm"][i], np.float64)
      ok = np.isfinite(g) & (g > 0)
      axes[2].plot(steps[ok], g[ok], lw=1.4, label=("|grad U|, " + label) if i == 0 else None, **st)
      axes[2].plot(steps, rec["train_loss"][i], lw=0.8, alpha=0.6, color=st["color"], ls=":",
                   label=f"U, {label}" if i == 0 else None)
  axes[0].set(xlabel="step", ylabel="training loss U (full training set)", yscale="log",
              title=f"(a) loss, sequence length {length}")
  axes[0].axhline(math.log(2), color="k", lw=0.5, ls=":")
  axes[1].set(xlabel="step", ylabel="test accuracy", title="(b) test accuracy", ylim=(0.2, 1.02))
  axes[2].set(xlabel="step", ylabel="|grad U|, U", yscale="log",
              title="(c) |grad U| along aMC (diagnosis only)")
  axes[0].legend(fontsize=7)
  axes[2].legend(fontsize=7)
  fig.suptitle("Fig. 5 (Whitelam et al. 2022) at reduced size; thick lines lr 1e-3, thin the lr sweep")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
