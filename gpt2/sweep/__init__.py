"""Hyperparameter sweeps: the Optuna study (study.py), reading a sweep's results (report.py) and
the multirun callback that records and reports them (callback.py)."""
