"""Baselines people would otherwise use, on repedit's edit protocol (each returns an `Edit`)."""
