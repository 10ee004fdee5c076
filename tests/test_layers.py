"""Imports run down the layers only, and stages of one layer do not import each other.

The layers, top to bottom (docs/architecture.md explains each):

- commands: the command lines of main.py and backups_main.py
- runner: the lock, the logs and the metrics every command runs under
- jobs: one module per job, composing stages (hourly run, backfill, import, demo, ...)
- read model: the status facts, gathered once for status, report and metrics
- stages: extract, load, training, backups, report rendering, monitoring output
- adapters: the Metals.Dev client, the database functions, the fake API
- domain: pure transformations and rules (frames, quality rule, the facts' types)
- base: errors, files, configuration, logging, shutdown

A module may import any module of a lower layer. Inside a layer, modules of one package
(`source.ml.*`, `source.backups.*`, ...) may import each other; different packages or
top-level modules of the same layer may not. Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "source"

# Each layer lists module prefixes; a module belongs to the first layer one of its prefixes
# matches (longest prefix wins inside a layer).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("commands", ("source.commands",)),
    ("runner", ("source.entrypoint",)),
    (
        "jobs",
        (
            "source.pipeline",
            "source.backfill",
            "source.csv_import",
            "source.quality_review",
            "source.demo",
            "source.db_init",
        ),
    ),
    ("read model", ("source.status",)),
    (
        "stages",
        (
            "source.extract",
            "source.load",
            "source.ml",
            "source.backups",
            "source.report",
            "source.monitoring",
        ),
    ),
    ("adapters", ("source.metals_dev", "source.db_functions", "source.sandbox")),
    ("domain", ("source.transform", "source.quality", "source.facts")),
    (
        "base",
        (
            "source.errors",
            "source.files",
            "source.shutdown",
            "source.config",
            "source.log_setup",
            "source.console",
            "source.progress",
        ),
    ),
]

# Inside the base layer these may import the ones before them.
BASE_ORDER = (
    "source.errors",
    "source.files",
    "source.shutdown",
    "source.config",
    "source.log_setup",
    "source.console",
    "source.progress",
)

def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every `source.*` module the file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("source"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "source":
                found.update(f"source.{alias.name}" for alias in node.names)
            elif node.module.startswith("source."):
                found.add(node.module)
    return found


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, package within the layer) of a module; unknown modules are an error."""
    for index, (_, prefixes) in enumerate(LAYERS):
        matches = [p for p in prefixes if module == p or module.startswith(p + ".")]
        if matches:
            return index, max(matches, key=len)
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(SOURCE.rglob("*.py")):
        importer = module_name(path)
        if importer == "source":
            continue
        own_layer, own_package = layer_of(importer)
        for imported in imported_modules(path):
            if imported == "source":
                continue
            layer, package = layer_of(imported)
            if layer > own_layer or package == own_package:
                continue
            if (
                layer == own_layer
                and package in BASE_ORDER
                and own_package in BASE_ORDER
                and BASE_ORDER.index(package) < BASE_ORDER.index(own_package)
            ):
                continue
            found.add((importer, imported))
    return found


def test_every_module_has_a_layer():
    for path in SOURCE.rglob("*.py"):
        if module_name(path) != "source":
            layer_of(module_name(path))


def test_imports_run_down_the_layers_only():
    new = violations()
    assert not new, "imports that run up or across the layers:\n" + "\n".join(
        f"  {a} imports {b}" for a, b in sorted(new)
    )

