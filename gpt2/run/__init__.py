"""A run's bookkeeping: the command line, the run directory, the run record and the loggers."""
