"""Attribution: parallel backprop, the Captum baselines, hook-safe model copies and the engine that runs them."""
