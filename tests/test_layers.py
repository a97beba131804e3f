"""The package's picture stays true: imports point one way and the device runtime stays TF-free.

Layers, lowest first: ``core`` (foundation) <- ``data`` <- ``train`` <- ``optimize`` <- ``report`` <- ``cli``;
``runtime`` stands beside ``data`` on ``core`` alone, and only ``optimize``, ``deploy`` and ``cli``
may use it; ``deploy`` (host to Pi over SSH) needs no TensorFlow either.
Every import counts, the lazy ones inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ALLOWED = {
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "data": {"core", "data"},
    "train": {"core", "data", "train"},
    "optimize": {"core", "data", "train", "runtime", "optimize"},
    "deploy": {"core", "runtime", "deploy"},
    "report": {"core", "data", "train", "runtime", "optimize", "report"},
    "cli": {"core", "data", "train", "runtime", "optimize", "deploy", "report", "cli"},
}
HOST_ONLY = {"tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "edgecls.core.keras"}


def module_imports(package_dir: Path) -> dict[str, set[str]]:
    """{module: every module it imports (absolute names)}, read from the source of ``package_dir``."""
    out: dict[str, set[str]] = {}
    base = package_dir.parent
    for f in sorted(package_dir.rglob("*.py")):
        parts = list(f.relative_to(base).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        name = ".".join(parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    pkg = parts if is_pkg else parts[:-1]
                    mod = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                found.add(mod)
                # "from edgecls import data" imports the module edgecls.data
                found.update(f"{mod}.{a.name}" for a in node.names if (base / mod.replace(".", "/") / a.name).exists()
                             or (base / mod.replace(".", "/") / f"{a.name}.py").exists())
        out[name] = found
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edgecls" and parts[1] in ALLOWED else None


def layer_violations(imports: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in imports.items():
        own = layer_of(mod)
        if own is None:
            continue
        for dep in deps:
            other = layer_of(dep)
            if other is not None and other not in ALLOWED[own]:
                bad.append(f"{mod} ({own}) imports {dep} ({other})")
    return sorted(bad)


def cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between edgecls modules (a package importing its own children is not one)."""
    graph = {m: {d for d in deps if d in imports and d != m and not d.startswith(m + ".")} for m, deps in imports.items()}
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def closure(imports: dict[str, set[str]], start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imports.get(m, ()))
    return seen


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    return module_imports(ROOT / "edgecls")


def test_every_module_lives_in_a_layer(imports):
    loose = [m for m in imports if m not in ("edgecls",) and layer_of(m) is None]
    assert loose == [], f"modules outside the layers {sorted(ALLOWED)}: {loose}"


def test_imports_point_down_the_model_path(imports):
    assert layer_violations(imports) == []


def test_no_import_circles(imports):
    assert cycles(imports) == []


def test_runtime_and_everything_it_imports_is_tensorflow_free(imports):
    reach = closure(imports, {m for m in imports if layer_of(m) == "runtime"})
    # importlib's last-resort tf.lite fallback in interpreter.py is not an import statement.
    assert sorted(reach & HOST_ONLY) == []
    assert not any(m.split(".")[0] in HOST_ONLY for m in reach)


def test_checker_catches_an_upward_import_a_circle_and_tensorflow(tmp_path):
    """The guards above are real: a tree that breaks each rule is caught by each."""
    pkg = tmp_path / "edgecls"
    for sub in ALLOWED:
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "scan.py").write_text("from edgecls.train import fit\n")  # data -> train: upward
    (pkg / "train" / "fit.py").write_text("def f():\n    from edgecls.train import report\n")
    (pkg / "train" / "report.py").write_text("from edgecls.train.fit import f\n")  # fit <-> report
    (pkg / "runtime" / "loop.py").write_text("from edgecls.core import keras\n")
    (pkg / "core" / "keras.py").write_text("import tensorflow\n")
    found = module_imports(pkg)
    assert layer_violations(found) == ["edgecls.data.scan (data) imports edgecls.train (train)",
                                       "edgecls.data.scan (data) imports edgecls.train.fit (train)"]
    assert cycles(found) == [["edgecls.train.fit", "edgecls.train.report", "edgecls.train.fit"]]
    assert "edgecls.core.keras" in closure(found, {"edgecls.runtime.loop"})
