"""The shape of the code: what the layers promise each other, checked on the source."""

import re
from pathlib import Path


def test_no_caller_branches_on_the_executor():
    """The sweeps and the command line drive an executor through its interface (an_lab.launch.base.Executor): none
    of them asks which executor it has, nor compares an executor's name or builds one by class (an_lab.launch.registry
    does), so a third executor changes nothing outside an_lab/launch."""
    root = Path(__file__).resolve().parents[1] / "an_lab"
    pattern = re.compile(
        r"executor\.name\s*[=!]=|getattr\(executor|isinstance\([^)]*Executor\)"
        r"|[=!]=\s*[\"'](local|slurm)[\"']|[\"'](local|slurm)[\"']\s*[=!]=|LocalExecutor|SlurmExecutor"
        # nor imports one executor's modules: what they record is read through the registry (JobRecords); the
        # launcher.slurm section of the sweep file's schema (slurm_settings) is the one exception
        r"|an_lab\.launch\.(local|slurm(?!_settings))|from an_lab\.launch import (local|slurm)"
    )
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("sweeps", "cli", "analysis")
        for path in sorted((root / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a loop (Tarjan's strongly connected
    components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(edges[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1 or module in edges[module]:
                groups.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(groups)


def test_import_cycles_counting_imports_inside_functions():
    """The import graph of the package (grimp, which import-linter ships, reads every import statement, those inside
    functions too) has no cycle: a module that needs something above it is handed it (expand.py resolves backbones
    with the sweep finder an_lab.sweeps.manifest passes in). A new cycle fails here."""
    import grimp

    graph = grimp.build_graph("an_lab", cache_dir=None)  # the source as it is now, never a cached graph
    edges = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds one
    assert _cycles(edges) == []
