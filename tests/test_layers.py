"""The shape of the code: what the layers promise each other, checked on the source."""

import re
from pathlib import Path


def test_no_caller_branches_on_the_executor():
    """The sweeps and the command line drive an executor through its interface (an_lab.launch.base.Executor): none
    of them asks which executor it has, so a third executor changes nothing outside an_lab/launch."""
    root = Path(__file__).resolve().parents[1] / "an_lab"
    pattern = re.compile(r"executor\.name\s*[=!]=|getattr\(executor|isinstance\([^)]*Executor\)")
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("sweeps", "cli", "analysis")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
