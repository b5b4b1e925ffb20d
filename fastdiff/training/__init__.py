"""The built-in default models: procedural scenes, their training, shipped weights and evaluation."""
