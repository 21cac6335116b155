"""Measurements: loader, training and speed-accuracy benchmarks (`python -m bench.<name>`)."""
