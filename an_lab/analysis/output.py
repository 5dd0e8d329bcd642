"""Where analysis writes what the user asked for (--out): the advice a UsageError adds when a figure, page or report
cannot be written there (handed to an_lab.atomic.write_files, the project's one atomic writer)."""

from __future__ import annotations

import errno


def out_advice(error: OSError) -> str:
    """What to do when a figure, page or report cannot be written where --out points (an_lab.atomic.write_files)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space, or choose another place with --out"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "choose a writable place with --out"
    return "choose another place with --out"
