"""Submission details of the SLURM executor that need no cluster."""

import os

from an_lab.launch.slurm_sbatch import outside_allocation


def test_a_submission_from_inside_a_job_drops_that_jobs_slurm_variables(monkeypatch):
    """A detached orchestrator submits trials from inside its own job: an inherited SLURM_MEM_PER_NODE beside the new
    job's SLURM_MEM_PER_CPU made every srun of the trial fail ("mutually exclusive"), and the trial was resubmitted."""
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "2048")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SBATCH_ACCOUNT", "lab")  # the user's own sbatch defaults stay
    with outside_allocation():
        assert "SLURM_MEM_PER_NODE" not in os.environ and "SLURM_JOB_ID" not in os.environ
        assert os.environ["SLURM_CONF"] == "/etc/slurm/slurm.conf" and os.environ["SBATCH_ACCOUNT"] == "lab"
    assert os.environ["SLURM_MEM_PER_NODE"] == "2048" and os.environ["SLURM_JOB_ID"] == "123"
