"""Implementation of amc_jax; import the public names from ``amc_jax``."""
