"""The one-way layout (issue 11), read from the code's own imports.

- `train` and `engines` use `vce_stream`; `vce_stream` never imports them (the CLI names their
  commands as strings and imports them lazily, which is no import statement).
- Inside `vce_stream`, each unit (a sub-package or a top-level module) imports only units on its own
  layer or below, and no two units import each other through any chain (no package-level loop).
Every import statement counts, also those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. A unit may import units of its own layer or of a lower one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "atomic", "labels", "config", "limits", "probabilities", "output_paths"),
    ("events", "scores", "sources", "embeddings"),
    ("metrics",),
    ("postprocess",),
    ("model",),
    ("engine",),
    ("report",),
    ("sinks",),
    ("pipeline",),
    ("batch",),
    ("simulate", "synthetic"),
    ("commands",),
    ("cli", "__main__"),
)
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """"vce_stream.engine.select" -> "engine"; "vce_stream" -> "__init__"; "train.loop" -> "train"."""
    parts = module.split(".")
    if parts[0] != "vce_stream":
        return parts[0]
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports are not used here)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module or "")
    return found


def project_edges(package: str) -> dict[str, set[str]]:
    """unit -> units of this project it imports, for every file under `package`."""
    edges: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        unit = unit_of(module) if package == "vce_stream" else package
        targets = {unit_of(m) for m in imported_modules(path) if m.split(".")[0] in ("vce_stream", "train", "engines")}
        edges.setdefault(unit, set()).update(targets - {unit})
    return edges


def test_every_vce_stream_unit_has_a_layer():
    units = set(project_edges("vce_stream"))
    assert units <= set(LAYER_OF), f"units without a layer in LAYERS: {sorted(units - set(LAYER_OF))}"


def test_the_runtime_never_imports_training_or_engine_builders():
    offenders = {unit: sorted(t & {"train", "engines"}) for unit, t in project_edges("vce_stream").items() if t & {"train", "engines"}}
    assert offenders == {}


@pytest.mark.parametrize("package", ["train", "engines"])
def test_training_and_builders_use_the_runtime_but_not_each_other(package):
    targets = project_edges(package)[package]
    other = {"train": "engines", "engines": "train"}[package]
    assert other not in targets


def test_no_vce_stream_unit_imports_one_above_it():
    upward = sorted(
        f"{unit} (layer {LAYER_OF[unit]}) -> {target} (layer {LAYER_OF[target]})"
        for unit, targets in project_edges("vce_stream").items()
        for target in targets
        if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[unit]
    )
    assert upward == []


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph `edges`, or None (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt) is None and (found := visit(nxt)):
                return found
        colour[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if colour.get(node) is None and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_loop_and_only_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_package_level_import_loop():
    assert find_cycle(project_edges("vce_stream")) is None
