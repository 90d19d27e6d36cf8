"""Benchmarks: speed of the operator, sampler and training step, and paired accuracy studies."""
