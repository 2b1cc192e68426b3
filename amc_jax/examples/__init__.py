"""Runnable examples of amc_jax, each a small main program.

* ``python -m amc_jax.examples.sine``: a one-hidden-layer tanh net learns
  sin(2 pi theta) with aMC (the problem of Section II B of Whitelam et al.
  2022).
* ``python -m amc_jax.examples.rosenbrock``: aMC on the Rosenbrock function for
  three values of epsilon (Fig. 3 of the paper), in float64.

Each module also exposes a function that returns its results, so that tests
and notebooks can run it at a small size.
"""
