"""Readouts: per-neuron maps from latents to responses (ridge; the SGD-trained factorized, gaussian2d, attention)."""
