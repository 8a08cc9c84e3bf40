"""Backends: one protocol for running a model with reads and writes at sites (torch hooks, TransformerLens, nnsight)."""
