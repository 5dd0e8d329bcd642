"""Timing helpers shared by the benchmarks: interleaved rounds, medians, ratios taken within one run."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved_medians(
    candidates: dict[str, Callable[[], None]], *, rounds: int, iterations: int, warmup: int = 3
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each candidate, and the relative spread (max - min) / median of the rounds.

    Candidates alternate within every round so that drift of the machine hits all of them alike.
    """
    for run in candidates.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            synchronize()
            start = time.perf_counter()
            for _ in range(iterations):
                run()
            synchronize()
            samples[name].append((time.perf_counter() - start) / iterations)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    spread = {name: (max(values) - min(values)) / medians[name] for name, values in samples.items()}
    return medians, spread


def save(results: dict, name: str) -> Path:
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
