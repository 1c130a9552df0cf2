"""Encoding models: backbones and readouts, fitting and held-out scores, saving and loading."""
