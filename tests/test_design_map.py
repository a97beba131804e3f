"""docs/design.md's module map names every module of the package: a new module is placed on the map
when it is written, and a removed one leaves it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mapped() -> set[str]:
    """Module paths the map names: each `name.py` in the folder of its **folder/** heading, or of the list
    item it continues when that item opens a sub-folder (- `int8/` — ...)."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    out: set[str] = set()
    folder = item_folder = ""
    for line in section.splitlines():
        head = re.match(r"\*\*([a-z0-9_]+)/\*\*", line)
        if head:
            folder = item_folder = head.group(1)
        elif line.startswith("- "):
            sub = re.match(r"- `([a-z0-9_]+)/` ", line)
            item_folder = f"{folder}/{sub.group(1)}" if sub else folder
        elif not line.startswith("  "):
            item_folder = folder
        out.update(f"{item_folder}/{name}" for name in re.findall(r"`([a-z0-9_]+\.py)`", line))
    return out


def test_every_module_is_on_the_design_map():
    modules = {str(p.relative_to(ROOT / "edgecls")) for p in (ROOT / "edgecls").rglob("*.py")
               if "__pycache__" not in p.parts}
    mapped = _mapped()
    modules = {m for m in modules if not m.endswith("__init__.py") or m in mapped}  # a package's own code, if named
    missing = sorted(modules - mapped)
    assert not missing, f"docs/design.md's module map leaves out {missing}"
    gone = sorted(m for m in mapped if m not in modules)
    assert not gone, f"docs/design.md's module map names modules that do not exist: {gone}"
