"""Reproductions of the figures of Whitelam et al.: ``python -m benchmarks.paper.<name>``."""
