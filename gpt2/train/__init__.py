"""Training: the parts of a run, the loop, checkpoints, the resume plan, devices and processes."""
