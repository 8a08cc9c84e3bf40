"""Fitting: optimisation of trained tensors, streaming statistics, probes, SAEs."""
