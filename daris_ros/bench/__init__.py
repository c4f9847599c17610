"""``daris-bench``: the paper's experiments and baselines on one GPU (docs/gpu_runtime.md, docs/benchmarks/)."""
