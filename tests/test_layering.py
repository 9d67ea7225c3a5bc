"""Dependencies point down: library modules never import the CLI, nor each other's privates."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "npad_edge"


def _imports(path: Path) -> set[tuple[str, str]]:
    """(module, name) pairs of every ``from X import name`` in ``path`` (relative modules as
    written, e.g. ``.cli``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = "." * node.level + (node.module or "")
            out |= {(mod, a.name) for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {(a.name, "") for a in node.names}
    return out


def test_library_modules_do_not_import_the_cli():
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if p.name != "cli.py"
                 and any(m in (".cli", "..cli", "npad_edge.cli") for m, _ in _imports(p))]
    assert offenders == []


def test_no_module_imports_private_names_of_another():
    offenders = []
    for p in PKG.rglob("*.py"):
        for mod, name in _imports(p):
            if name.startswith("_") and not name.startswith("__") and mod.lstrip(".") not in ("", "_core") \
                    and not mod.lstrip(".").startswith("_") and mod.lstrip(".").split(".")[-1] in {
                        "pipeline", "cli", "evaluation", "demo"}:
                offenders.append(f"{p.relative_to(PKG)}: from {mod} import {name}")
    assert offenders == []


def test_prediction_helpers_live_in_the_library(tmp_path):
    from npad_edge import cli, predict
    from npad_edge._progress import progress_bar, progress_iter

    assert cli.predict_images is predict.predict_images and cli.write_scores is predict.write_scores
    assert list(progress_iter(range(3), total=3, desc="x", enabled=False)) == [0, 1, 2]
    assert progress_bar(3, "x", False) is None
    rows = [{"path": "a.png", "score": 1.5, "is_anomalous": True, "threshold": 1.0, "ms": 2.0,
             "overlay": None, "error": None}]
    predict.write_scores(tmp_path, rows, meta={"model": "m"})
    assert (tmp_path / "scores.csv").read_text().splitlines() == [
        "path,score,is_anomalous,threshold,ms,overlay,error", "a.png,1.5,True,1.0,2.0,,"]
