"""Backbones: frozen networks cut at a layer (the shared base, torchvision networks, the shipped in-silico CNN)."""
