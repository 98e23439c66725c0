"""Evaluation: the official VIST3A benchmarks (novel-view synthesis, generation metrics)."""
