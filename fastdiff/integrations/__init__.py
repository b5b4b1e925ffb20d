"""Adapters to other stacks, one module each: diffusers.py holds accelerate(pipe) and explain(pipe)."""
