"""The small runtime every layer uses: errors, atomic file writes, the work store, devices and ranks."""
