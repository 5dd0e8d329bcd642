"""SLURM job shapes and what a partition allows: the shape a run needs (one task per GPU, `tasks_per_node =
trainer.devices`, `nodes = trainer.num_nodes`; with no GPUs (`gpus_per_node: 0`, or a cluster without GRES gpu)
tasks_per_node is trainer.devices CPU processes, DDP over gloo), the job's time limit, why a job can never start in
the partition, and which cluster limit an sbatch refusal most likely hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from an_lab.launch import slurm_queue as queue
from an_lab.launch.base import LaunchError, RunRequest
from an_lab.launch.slurm_queue import ClusterLimits
from an_lab.launch.slurm_settings import SlurmSettings, parse_minutes


@dataclass(frozen=True)
class Shape:
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int

    def describe(self) -> str:
        gpus = f"{self.gpus_per_node} GPU(s)" if self.gpus_per_node else "no GPU"
        return f"{self.nodes} node(s) x {self.tasks_per_node} task(s), {gpus} and {self.cpus_per_task} CPU(s) per task"


GPUS_KEY = ("launcher", "slurm", "gpus_per_node")


def job_shape(request: RunRequest, settings: SlurmSettings, cluster_gpus: bool | None) -> Shape:
    """The job shape a run needs, after refusing a Trainer that does not fit the settings or the cluster."""
    trainer, name = request.config.trainer, f"run {request.run_id} ({request.label or request.run_id})"
    if trainer.num_nodes != settings.nodes:
        raise LaunchError(
            f"{name}: trainer.num_nodes is {trainer.num_nodes} but launcher.slurm.nodes is {settings.nodes}; they "
            "must be equal",
            ("launcher", "slurm", "nodes"),
        )
    devices = 1 if trainer.devices == "auto" else int(trainer.devices)
    gpus = settings.gpus_per_node
    if gpus is None:  # from the cluster: GPUs where the partition has them and the run wants them
        if trainer.accelerator == "gpu" and cluster_gpus is False:
            raise LaunchError(
                f"{name}: trainer.accelerator is gpu but the cluster's partition has no GPUs configured (no GRES gpu "
                "in sinfo); set trainer.accelerator: cpu, or launcher.slurm.gpus_per_node if the partition has GPUs",
                GPUS_KEY,
            )
        gpus = 0 if trainer.accelerator == "cpu" or not cluster_gpus else devices
    elif gpus > 0:
        if trainer.accelerator == "cpu":
            raise LaunchError(
                f"{name}: trainer.accelerator is cpu but launcher.slurm.gpus_per_node is {gpus}; set "
                "launcher.slurm.gpus_per_node: 0 for CPU jobs",
                GPUS_KEY,
            )
        if devices != gpus:
            raise LaunchError(
                f"{name}: trainer.devices is {trainer.devices} but launcher.slurm.gpus_per_node is {gpus}; one task "
                "per GPU needs them equal",
                GPUS_KEY,
            )
    elif trainer.accelerator == "gpu":
        raise LaunchError(
            f"{name}: trainer.accelerator is gpu but launcher.slurm.gpus_per_node is 0; ask for GPUs", GPUS_KEY
        )
    cpus = settings.cpus_per_task or request.config.data.num_workers + 1
    return Shape(settings.nodes, devices, gpus, cpus)


def time_minutes(settings: SlurmSettings, partition: queue.Partition | None = None) -> int:
    if settings.time is not None:
        try:
            return parse_minutes(settings.time)
        except ValueError as error:
            raise LaunchError(f"launcher.slurm.time: {error}", ("launcher", "slurm", "time")) from None
    # submitit always writes a --time; take the partition's own default (else its maximum) rather than submitit's
    # 5 minutes
    if partition is None:
        partition = queue.partition_info(settings.partition)
    found = partition.default_minutes or partition.max_minutes if partition is not None else None
    return found or 365 * 24 * 60


def show_minutes(minutes: int) -> str:
    """A time limit as SLURM writes it: 5:00, 2:00:00, 1-00:00:00."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours}:{mins:02d}:00" if hours else f"{mins}:00"


MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def memory_mb(text: str) -> float:
    """A SLURM memory size (64G, 1000, 500M) in megabytes (no unit: megabytes)."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    return int(match.group(1)) * MEMORY_UNITS[match.group(2) or "M"] if match else 0.0


def fit_problem(shape: Shape, minutes: int, settings: SlurmSettings, partition: queue.Partition) -> LaunchError | None:
    """Why a job of this shape and time can never start in the partition (sbatch would accept it and leave it
    pending for ever, or refuse it with raw errors), as one paragraph with its key; None when it fits."""
    where = f"partition {partition.name}"
    if partition.max_minutes is not None and minutes > partition.max_minutes:
        return LaunchError(
            f"launcher.slurm.time asks {show_minutes(minutes)} per job but {where} allows at most "
            f"{show_minutes(partition.max_minutes)} (its MaxTime): the job would pend for ever (PartitionTimeLimit). "
            f"Ask for at most {show_minutes(partition.max_minutes)}: a run that needs longer is requeued at its time "
            "limit and resumes from its checkpoint; or choose another partition",
            ("launcher", "slurm", "time"),
        )
    if partition.node_limit and shape.nodes > partition.node_limit:
        return LaunchError(
            f"launcher.slurm.nodes is {shape.nodes} but {where} gives one job at most {partition.node_limit} "
            "node(s); ask for at most that many (and set trainer.num_nodes to match)",
            ("launcher", "slurm", "nodes"),
        )
    cpus = shape.tasks_per_node * shape.cpus_per_task
    if partition.cpus_per_node and cpus > partition.cpus_per_node:
        return LaunchError(
            f"a job needs {cpus} CPUs per node ({shape.tasks_per_node} task(s) x {shape.cpus_per_task} CPUs: "
            f"launcher.slurm.cpus_per_task, else data.num_workers + 1) but the largest node of {where} has "
            f"{partition.cpus_per_node}; lower launcher.slurm.cpus_per_task or data.num_workers",
            ("launcher", "slurm", "cpus_per_task"),
        )
    wanted = memory_mb(settings.mem) if settings.mem else 0.0
    if partition.memory_mb and wanted > partition.memory_mb:
        return LaunchError(
            f"launcher.slurm.mem is {settings.mem} per node but the largest node of {where} has "
            f"{partition.memory_mb} MB; ask for at most {partition.memory_mb}M (0: all of a node's memory)",
            ("launcher", "slurm", "mem"),
        )
    gres = [key for key, value in settings.additional_parameters.items() if asks_for_gpus(key, value)]
    if not partition.gpus and (shape.gpus_per_node or gres):
        key = ("launcher", "slurm", "additional_parameters") if gres else GPUS_KEY
        what = f"additional_parameters.{gres[0]}" if gres else f"gpus_per_node {shape.gpus_per_node}"
        return LaunchError(
            f"launcher.slurm.{what} asks for GPUs but no node of {where} has GRES gpu (sinfo); remove it for CPU "
            "jobs (trainer.accelerator: cpu), or choose a partition with GPUs",
            key,
        )
    return None


def asks_for_gpus(key: str, value: object) -> bool:
    lowered = str(key).lower()
    if lowered in ("gpus", "gpus_per_node", "gpus_per_task", "gpus_per_socket", "gpu"):
        return str(value).strip() not in ("0", "")
    return lowered in ("gres", "tres_per_node", "tres_per_task") and "gpu" in str(value).lower()


def refusal(detail: str, limits: ClusterLimits, tasks: int) -> str:
    """sbatch's refusal with the cluster limit it most likely hit."""
    lowered = detail.lower()
    if "array" in lowered and limits.max_array_size is not None:
        detail += f" (MaxArraySize is {limits.max_array_size}; this array had {tasks} tasks)"
    elif ("submit" in lowered or "qos" in lowered or "policy" in lowered) and limits.max_submit_jobs is not None:
        detail += f" ({limits.submit_limit_source} is {limits.max_submit_jobs} jobs; each array task counts)"
    return detail
