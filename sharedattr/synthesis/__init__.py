"""Stimulus synthesis: most exciting inputs and related images."""
