"""Trainers of the assets sharedattr ships (the in-silico CNN, the diffusion prior); outside the wheel."""
