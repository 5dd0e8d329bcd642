"""Launchers: runs as local processes (local.py), or as submitit job arrays on a SLURM cluster."""
