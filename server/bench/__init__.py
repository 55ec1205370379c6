"""`tinyllava-med bench`: the runtime and the transformers baseline timed in child processes."""
