"""The layers hold: each package imports only those below it (docs/architecture.md).

    pipeline/  the method core: imports nothing of ours
    loaders/   the data backends: the core
    app/       the jobs, their options, session, training loop and reports: the core and the loaders
    bench/     the benchmarks and studies: everything
Every import counts, at module level or inside a function (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

from tests.helpers import ROOT

LAYERS = ("pipeline", "loaders", "app", "bench")
MAY_IMPORT = {name: set(LAYERS[: i + 1]) for i, name in enumerate(LAYERS)}
MAY_IMPORT["train.py"] = {"pipeline", "app"}


def our_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of one of our packages in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in LAYERS]
    return found


def modules() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))] + [
        ("train.py", ROOT / "train.py")
    ]


def test_every_import_goes_down_the_layers():
    broken = [
        f"{path.relative_to(ROOT)}:{line} imports {package}"
        for layer, path in modules()
        for line, package in our_imports(path)
        if package not in MAY_IMPORT[layer]
    ]
    assert not broken, "imports against the layering:\n" + "\n".join(broken)


def test_the_walk_sees_lazy_and_relative_free_imports(tmp_path):
    """The check itself: an import inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from app.jobs import run_train\n    import loaders.base\n")
    assert our_imports(module) == [(2, "app"), (3, "loaders")]


def test_no_import_hides_behind_type_checking():
    """A TYPE_CHECKING import is how a cycle gets dodged instead of removed."""
    hiding = [str(path.relative_to(ROOT)) for _, path in modules() if "TYPE_CHECKING" in path.read_text()]
    assert not hiding
