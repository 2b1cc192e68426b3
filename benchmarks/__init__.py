"""Benchmarks of amc_jax: run each script as a module from the repository root (see README.md)."""
