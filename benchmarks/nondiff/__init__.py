"""Non-differentiable nets, Monte Carlo against gradient surrogates: ``python -m benchmarks.nondiff.<name>``."""
