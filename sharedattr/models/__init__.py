"""Encoding models: backbones, readouts and their combination."""
