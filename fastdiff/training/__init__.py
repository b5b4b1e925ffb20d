"""Training of the built-in models (fastdiff.builtin) on procedural scenes: the training loops, the
attribute classifier that judges samples, and the prompt-accuracy evaluation."""
