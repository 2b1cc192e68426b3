"""Studies and comparisons (proposals, parallel methods, evosax, signal norm, ...): ``python -m benchmarks.studies.<name>``."""
