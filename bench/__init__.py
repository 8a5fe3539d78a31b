"""Benchmarks: run each as a module from the checkout root (``python -m bench.serve``)."""
