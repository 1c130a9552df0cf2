"""Experiments: the run context, the stages, and the commands made of them (run, compare, synthesize, demo)."""
