"""Executors: where runs are trained. `LocalExecutor` (processes on this machine) and `SlurmExecutor` (submitit job
arrays) behind one interface (base.py); they know runs (a run folder with its config), never sweeps."""
