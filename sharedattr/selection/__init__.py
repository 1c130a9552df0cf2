"""Which neurons and images to explain: neuron selection, driver choice and matching to references."""
