"""Speed and memory benchmarks of the library: ``python -m benchmarks.speed.<name>``."""
