"""The results index of a sweep: the numbers collect() takes from each finished run's result.json, kept in one file
in the sweep folder (an_lab.sweeps.manifest.RESULTS_INDEX), so that reading a sweep of 100,000 finished runs again
costs one file and one stat per run instead of 100,000 JSON files.

    <output_dir>/sweeps/<name>/results-index.npz     numpy's .npz (a zip of .npy arrays, no pickles):
    meta        JSON: the format VERSION, the output folder the runs were read from, the columns it was made for
    run_ids     the runs' ids, one per line (UTF-8)
    inodes      each result.json's inode (uint64) ...
    stamps      ... and its size, mtime_ns, ctime_ns (int64): with the inode, an_lab.rundir.stamp()
    numbers     one row per run: the numeric columns the index holds (`stored`; a column no run has is left out)
    <tail>_lengths, <tail>_values    each tail column: the length of each run's tail and all values, run after run

An entry is used only while its result.json has the same stamp (one os.stat per run, an_lab.rundir.scan_runs): a
result written again (a new inode, a new ctime), deleted or damaged is read again, as is a run that finished after
the index was written. A result file changed less than RACY_NS ago (or dated in the future) is not put in the index:
a change within the file system's timestamp resolution could keep its stamp, so it is read again next time.

Failures: an index that cannot be read whole and consistent (missing, truncated, damaged: the zip's CRCs; another
format version, other columns, another output folder, a repeated run id) is ignored and replaced on the next write.
Writes go through an_lab.atomic (a temporary file renamed over the index), so readers and concurrent writers (two
`an-lab table` at once, a sweep finishing runs meanwhile) see a whole index, and since every entry is checked against
its file, the last writer's index is as right as any. A sweep folder that cannot be written (read-only, or not made
yet: a sweep file never launched) gets no index, and the table is the same.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from an_lab.atomic import write_files
from an_lab.errors import UsageError
from an_lab.rundir import Stamp

VERSION = 1  # raise when what collect() makes of a result.json changes (not only its columns)
RACY_NS = 2_000_000_000  # a result younger than this (by its ctime) is not indexed


@dataclass(frozen=True)
class Index:
    """An index as read: the stamp of each run's result (`known`, for scan_runs) and its numbers and tails."""

    known: dict[str, Stamp]
    position: dict[str, int]  # run id -> row
    stored: tuple[str, ...]  # the numeric columns `numbers` holds, in its order
    numbers: np.ndarray  # (runs, len(stored)) float64
    tails: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # column -> (lengths, offsets, values)

    def __len__(self) -> int:
        return len(self.position)


def _text(array: np.ndarray) -> str:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError("not text")
    return array.tobytes().decode("utf-8")


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def read_index(path: Path, output_dir: str, columns: tuple[str, ...], tails: tuple[str, ...]) -> Index | None:
    """The index at path when it is whole and was made from `output_dir` for these numeric and tail columns, else
    None (missing, unreadable, damaged or made for something else: the caller reads every result and rewrites it)."""
    try:
        with np.load(path, allow_pickle=False) as found:
            return _parse({name: found[name] for name in found.files}, output_dir, columns, tails)
    except Exception:  # any damage (a cut-off zip, a bad CRC, wrong shapes or types) means no index
        return None


def _parse(arrays: dict[str, np.ndarray], output_dir: str, columns: tuple, tails: tuple) -> Index | None:
    meta = json.loads(_text(arrays["meta"]))
    expected = {"version": VERSION, "output_dir": output_dir, "columns": list(columns), "tails": list(tails)}
    if not isinstance(meta, dict) or any(meta.get(key) != value for key, value in expected.items()):
        return None
    stored = tuple(meta["stored"])
    run_ids = _text(arrays["run_ids"]).split("\n") if arrays["run_ids"].size else []
    count = len(run_ids)
    inodes, stamps, numbers = arrays["inodes"], arrays["stamps"], arrays["numbers"]
    if (
        not set(stored) <= set(columns)
        or len(set(run_ids)) != count
        or inodes.shape != (count,)
        or inodes.dtype != np.uint64
        or stamps.shape != (count, 3)
        or stamps.dtype != np.int64
        or numbers.shape != (count, len(stored))
        or numbers.dtype != np.float64
    ):
        return None
    found_tails = {}
    for column in tails:
        lengths, values = arrays[f"{column}_lengths"], arrays[f"{column}_values"]
        if lengths.shape != (count,) or lengths.dtype != np.int64 or (lengths < 0).any() or values.dtype != np.float64:
            return None
        if values.shape != (int(lengths.sum()),):
            return None
        found_tails[column] = (lengths, np.cumsum(lengths) - lengths, values)
    known = dict(zip(run_ids, zip(inodes.tolist(), *stamps.T.tolist(), strict=True), strict=True))
    return Index(known, {run_id: row for row, run_id in enumerate(run_ids)}, stored, numbers, found_tails)


def stamp_arrays(stamps: list[Stamp]) -> tuple[np.ndarray, np.ndarray]:
    """The stamps as arrays: inodes (uint64) and (size, mtime_ns, ctime_ns) rows (int64)."""
    try:
        table = np.array(stamps, dtype=np.int64).reshape(len(stamps), 4)  # one pass in C
    except OverflowError:  # an inode number of 2**63 or more (some network file systems)
        inodes, sizes, mtimes, ctimes = zip(*stamps, strict=True)
        return np.array(inodes, dtype=np.uint64), np.array([sizes, mtimes, ctimes], dtype=np.int64).T.copy()
    return table[:, 0].astype(np.uint64), np.ascontiguousarray(table[:, 1:])


def settled(times: np.ndarray, now_ns: int) -> np.ndarray:
    """Per (size, mtime_ns, ctime_ns) row, whether its result may be indexed: last changed RACY_NS or longer before
    now_ns, and not in the future."""
    return np.maximum(times[:, 1], times[:, 2]) <= now_ns - RACY_NS


def write_index(
    path: Path,
    output_dir: str,
    columns: tuple[str, ...],
    run_ids: list[str],
    inodes: np.ndarray,
    times: np.ndarray,
    numbers: np.ndarray,
    tails: dict[str, list[tuple[float, ...]]],
) -> bool:
    """Write the index of these runs (their stamps as stamp_arrays() gives them, their rows of `numbers` over
    `columns`, their tails) atomically; False when it cannot be written (the sweep folder is read-only or missing),
    which only costs speed."""
    if any("\n" in run_id for run_id in run_ids):  # the ids are stored one per line
        keep = [row for row, run_id in enumerate(run_ids) if "\n" not in run_id]
        run_ids, inodes, times, numbers = [run_ids[row] for row in keep], inodes[keep], times[keep], numbers[keep]
        tails = {column: [values[row] for row in keep] for column, values in tails.items()}
    present = ~np.isnan(numbers).all(axis=0) if len(run_ids) else np.zeros(len(columns), dtype=bool)
    meta = {
        "version": VERSION,
        "output_dir": output_dir,
        "columns": list(columns),
        "tails": list(tails),
        "stored": [column for column, there in zip(columns, present, strict=True) if there],
        "written": time.time(),
    }
    arrays = {
        "meta": _bytes(json.dumps(meta)),
        "run_ids": _bytes("\n".join(run_ids)),
        "inodes": np.ascontiguousarray(inodes, dtype=np.uint64),
        "stamps": np.ascontiguousarray(times, dtype=np.int64).reshape(len(run_ids), 3),
        "numbers": np.ascontiguousarray(numbers[:, present], dtype=np.float64),
    }
    for column, values in tails.items():
        arrays[f"{column}_lengths"] = np.array([len(tail) for tail in values], dtype=np.int64)
        arrays[f"{column}_values"] = np.array([value for tail in values for value in tail], dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        write_files({path: buffer.getvalue()}, make_folders=False)
    except UsageError:
        return False
    return True
