"""Files written whole or not at all: the project's one atomic writer (run ledgers, manifests, figures, pages).

`write_files` writes each file to a temporary file in its own folder (fsynced), and only once all of them are
complete renames them over their targets (os.replace): a reader sees the old file or the whole new one. When a step
fails (a full disk, a read-only folder, a target that is a folder) the temporary files and the folders made here are
removed, the files already there keep their content, and a UsageError names the path and the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from an_lab.errors import UsageError


def write_json(path: Path, data: dict) -> None:
    """One JSON document (sorted keys, indented), written whole; the folder must exist."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_files({Path(path): text.encode("utf-8")}, make_folders=False)


def write_files(
    files: dict[Path, bytes], *, advice: Callable[[OSError], str] | None = None, make_folders: bool = True
) -> list[Path]:
    """Write every file or none (module docstring). `advice(error)` adds what the user can do to the error;
    `make_folders` creates missing parent folders (removed again on failure). Returns the paths, in order."""
    created: list[Path] = []
    pending: list[tuple[Path, Path]] = []  # (temporary file, target)
    replaced: list[Path] = []
    action, subject = "write", None
    try:
        for path, data in files.items():
            if make_folders:
                action, subject = "create the folder", path.parent
                _make_folders(path.parent, created)
            action, subject = "write", path
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            pending.append((temporary, path))
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for temporary, path in pending:
            subject = path
            os.replace(temporary, path)
            replaced.append(path)
    except BaseException as error:  # an interrupt cleans up too; only OSError becomes the user's error
        _clean_up(pending, created)
        if not isinstance(error, OSError):
            raise
        if action == "create the folder" and error.filename:
            subject = Path(os.fsdecode(error.filename))
        kept = (
            f"{len(replaced)} of the {len(files)} files were already replaced ({', '.join(map(str, replaced))})"
            if replaced
            else "nothing there was changed"
        )
        reason = error.strerror or str(error)
        hint = f" ({advice(error)})" if advice is not None else ""
        raise UsageError(f"cannot {action} {subject}: {reason}; {kept}{hint}") from None
    return [path for _, path in pending]


def _clean_up(pending: list[tuple[Path, Path]], created: list[Path]) -> None:
    for temporary, _ in pending:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _make_folders(folder: Path, created: list[Path]) -> None:
    """Create `folder` and its missing parents, appending each folder this call made to `created` (outermost
    first) as soon as it exists, so that a later failure can remove them again."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir()
        except FileExistsError:
            if not candidate.is_dir():
                raise
            continue  # made meanwhile by someone else: not ours to remove
        created.append(candidate)
