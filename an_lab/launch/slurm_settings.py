"""The SLURM settings of a sweep (`launcher.slurm`), validated before anything is submitted, and SLURM's time format.

Every value becomes an `#SBATCH --key=value` line of the job script submitit writes; the checks here keep each one to
what sbatch accepts for it, so that no value can end its comment line and add a command to the job.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

from pydantic import Field, field_validator

from an_lab.config import MAX_DEVICES, MAX_NUM_NODES, Strict, control_character

# sbatch options that launcher.slurm.additional_parameters may not set, and why. Keys are written as submitit spells
# them, '_' for '-' (mail_type: --mail-type). sbatch also takes any unambiguous prefix of a long option (--out is
# --output), so a key that abbreviates one of these is refused too, unless it is a whole option itself (SBATCH_WHOLE).
SBATCH_RESERVED = {
    **dict.fromkeys(
        ("array", "output", "error", "open_mode", "signal"),
        "submitit sets it (the job array, the log files it reads the results from, the signal it checkpoints on)",
    ),
    **dict.fromkeys(
        ("job_name", "time", "nodes", "ntasks", "ntasks_per_node"),
        "an-lab sets it (job name an-lab-<sweep name>, launcher.slurm.time and nodes, one task per trainer.devices)",
    ),
    **{
        key: f"give it as launcher.slurm.{key}, where its value is checked"
        for key in ("partition", "account", "qos", "mem", "constraint", "cpus_per_task", "gpus_per_node")
    },
    **dict.fromkeys(
        ("parsable", "test_only", "wait", "help", "usage", "version"),
        "sbatch would then print no job id or not return, and the submission would fail",
    ),
    "wrap": "the job script is submitit's; --wrap would replace it",
}
SBATCH_WHOLE = ("gpus",)  # whole sbatch options that are also prefixes of a reserved one (--gpus, --gpus-per-node)
MAX_SBATCH_VALUE = 256  # characters of a string value of additional_parameters
MAX_TIME_MINUTES = 10 * 366 * 24 * 60  # a longer time limit is a typo (SLURM keeps limits as 32-bit minutes)
_SLURM_NAME = r"[A-Za-z0-9_.-]+"  # partition, account and QOS names
_SLURM_VALUES = {
    "partition": (
        re.compile(rf"{_SLURM_NAME}(?:,{_SLURM_NAME})*"),
        "a partition name or a comma list of them (letters, digits, '_', '.', '-')",
    ),
    "account": (re.compile(_SLURM_NAME), "an account name (letters, digits, '_', '.', '-')"),
    "qos": (re.compile(_SLURM_NAME), "a QOS name (letters, digits, '_', '.', '-')"),
    # Node features joined by SLURM's constraint operators: & (and), | (or), [] (matching or), *N (count), () and !.
    # The operators are shell characters, but the value stays on its #SBATCH comment line: no line breaks pass.
    "constraint": (
        re.compile(r"[A-Za-z0-9_.,&|\[\]*:()!-]+"),
        "a node feature expression (letters, digits and _ . , & | [ ] * : ( ) ! -)",
    ),
}
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MEMORY = re.compile(r"[0-9]{1,15}(?:[KMGTkmgt][Bb]?)?")
_TIME = re.compile(r"[0-9][0-9:-]{0,31}")


def _sbatch_key_problem(key: Any) -> str | None:
    if not isinstance(key, str) or not _SBATCH_KEY.fullmatch(key):
        spelled = key.replace("-", "_").lower() if isinstance(key, str) else ""
        hint = f"; write {spelled!r}" if _SBATCH_KEY.fullmatch(spelled) else ""
        return (
            f"key {reprlib.repr(key)} is not an sbatch option name as submitit spells it: a lower-case letter, then "
            f"lower-case letters, digits and '_' (written as '-'), at most 64 characters{hint}"
        )
    for reserved, why in SBATCH_RESERVED.items():
        if key == reserved or (reserved.startswith(key) and key not in SBATCH_WHOLE):
            option = reserved.replace("_", "-")
            read_as = "" if key == reserved else f" (sbatch reads it as --{option}, of which it is an abbreviation)"
            return f"key {key!r} may not be set here{read_as}: {why}"
    return None


def _sbatch_value_problem(key: str, value: Any) -> str | None:
    if value is True or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63):
        return None
    if value is False:
        return f"{key}: false is no sbatch value; write true for a flag or leave the key out (no requeue: no_requeue)"
    if not isinstance(value, str):
        return f"{key}: {reprlib.repr(value)} is not a string, an integer or true"
    if not value.strip():
        return f"{key}: the value is empty; leave the key out"
    if len(value) > MAX_SBATCH_VALUE:
        return f"{key}: the value is {len(value)} characters long; at most {MAX_SBATCH_VALUE}"
    if (char := control_character(value)) is not None:
        return f"{key}: {reprlib.repr(value)} holds the control character {char!r}; a job script line cannot hold it"
    return None


class SlurmSettings(Strict):
    """Validated here, used by the SLURM launcher (submitit's names without the `slurm_` prefix).

    Every value becomes an `#SBATCH --key=value` line of the job script submitit writes, and bash runs that script: a
    line break in a value would end the comment and turn the rest into a command of the job (and SLURM reads no
    #SBATCH line after the first command). So each value is held to what sbatch accepts for it, and the free text of
    additional_parameters may hold no control character.
    """

    partition: str | None = None  # one partition, or a comma list of them
    account: str | None = None
    qos: str | None = None
    time: str | int | None = None  # minutes, or "HH:MM:SS", "D-HH:MM:SS", ... (SLURM's formats)
    nodes: int = Field(1, ge=1, le=MAX_NUM_NODES, strict=True)
    # None: trainer.devices GPUs per node on a cluster with GPUs configured (GRES gpu), 0 on one without.
    gpus_per_node: int | None = Field(None, ge=0, le=MAX_DEVICES, strict=True)
    # None: data.num_workers + 1 per task (the loader workers and the training process itself).
    cpus_per_task: int | None = Field(None, ge=1, le=4096, strict=True)
    mem: str | None = None  # e.g. "64G"; a bare number is megabytes, as in sbatch
    constraint: str | None = None
    array_parallelism: int | None = Field(None, ge=1, strict=True)
    # more sbatch options: {mail_type: END, hold: true}
    additional_parameters: dict[str, Any] = Field(default_factory=dict)
    # How often `--wait` asks the scheduler (one squeue, at most one sacct per poll); the interval doubles, up to
    # 8 times this, while nothing changes.
    poll_interval_s: float = Field(30.0, ge=0.5, le=3600)
    cancel_wait_s: float = Field(120.0, ge=0, le=3600)  # how long `cancel` waits for the jobs to leave the queue

    @field_validator("partition", "account", "qos", "constraint", mode="before")
    @classmethod
    def _slurm_value(cls, value: Any, info) -> Any:
        grammar, allowed = _SLURM_VALUES[info.field_name]
        if value is not None and (
            not isinstance(value, str) or len(value) > MAX_SBATCH_VALUE or not grammar.fullmatch(value)
        ):
            raise ValueError(f"{reprlib.repr(value)} is not valid; give {allowed}, up to {MAX_SBATCH_VALUE} characters")
        return value

    @field_validator("time", mode="before")
    @classmethod
    def _time_limit(cls, value: Any) -> Any:
        if value is None:
            return value
        whole = isinstance(value, int) and not isinstance(value, bool)
        try:
            minutes = parse_minutes(value) if whole or (isinstance(value, str) and _TIME.fullmatch(value)) else None
        except ValueError:
            minutes = None
        if minutes is None or minutes > MAX_TIME_MINUTES:
            raise ValueError(
                f"{reprlib.repr(value)} is not a SLURM time limit; give minutes (an integer) or 'MM:SS', 'HH:MM:SS', "
                "'D-HH', 'D-HH:MM' or 'D-HH:MM:SS', more than 0 and at most 10 years"
            )
        return value

    @field_validator("mem", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15:
            return str(value)
        if value is not None and not (isinstance(value, str) and _MEMORY.fullmatch(value)):
            raise ValueError(
                f"{reprlib.repr(value)} is not a SLURM memory size; give an integer with an optional unit K, M, G or "
                "T, e.g. 64G (no unit: megabytes; 0: all of a node's memory)"
            )
        return value

    @field_validator("additional_parameters", mode="before")
    @classmethod
    def _sbatch_options(cls, value: Any) -> Any:
        if isinstance(value, dict):  # anything else: pydantic says a mapping is expected
            for key, item in value.items():
                problem = _sbatch_key_problem(key) or _sbatch_value_problem(key, item)
                if problem is not None:
                    raise ValueError(problem)
        return value


def parse_minutes(value: str | int) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes, rounded up."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"{value!r} is not a SLURM time limit (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, first, second, third = (int(part) if part else None for part in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = first * 3600 + second * 60 + third
    elif second is not None:  # MM:SS
        seconds = first * 60 + second
    else:  # minutes
        seconds = first * 60
    if seconds <= 0:
        raise ValueError(f"time limit {value!r} is not positive")
    return -(-seconds // 60)
