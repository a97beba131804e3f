"""Load a .tflite model with whichever TFLite runtime this machine has (never TensorFlow first).

Order: ``ai_edge_litert`` (maintained, wheels for aarch64 on Python 3.10-3.13), then
``tflite_runtime`` (last release 2.14; built against numpy 1.x so it cannot import under
numpy 2), then ``tensorflow.lite`` (deprecated for inference; only when the first two are
missing, e.g. on the host).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError
from edgecls.core.quiet import quiet_native_stderr

# (runtime name, module holding Interpreter), in order of preference.
RUNTIME_ORDER: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)
# A TFLite flatbuffer carries this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"

Interpreter = Any  # the runtime's Interpreter class; typed loosely because it varies by runtime


@dataclass
class RuntimeStatus:
    """What happened when one runtime was tried (for ``edgecls doctor``)."""

    name: str
    available: bool
    version: Optional[str] = None
    problem: Optional[str] = None


def _numpy_major() -> int:
    import numpy

    return int(numpy.__version__.split(".")[0])


def _tflite_runtime_numpy_problem() -> Optional[str]:
    """tflite-runtime 2.14 (the last release) is compiled against numpy 1.x."""
    if importlib.util.find_spec("tflite_runtime") is None:
        return None
    try:
        from importlib.metadata import version

        ver = version("tflite-runtime")
    except Exception:  # noqa: BLE001 - metadata missing is not fatal
        ver = "unknown"
    try:
        major, minor = (int(p) for p in ver.split(".")[:2])
    except ValueError:
        major, minor = 2, 14  # unknown: assume the last release
    if _numpy_major() >= 2 and (major, minor) <= (2, 14):
        import numpy

        return (
            f"tflite-runtime {ver} needs numpy<2 but numpy {numpy.__version__} is installed "
            "(pip install 'numpy<2', or better: pip install ai-edge-litert)"
        )
    return None


def _try_import(name: str, module: str) -> tuple[Optional[Any], RuntimeStatus]:
    """Import one runtime's interpreter module; never raises."""
    if name == "tflite_runtime":
        problem = _tflite_runtime_numpy_problem()
        if problem:
            return None, RuntimeStatus(name, False, problem=problem)
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return None, RuntimeStatus(name, False, problem=f"not installed ({e})")
    except Exception as e:  # noqa: BLE001 - a broken binary wheel raises anything
        return None, RuntimeStatus(name, False, problem=f"{type(e).__name__}: {e}")
    if name == "tensorflow":
        if not hasattr(mod, "Interpreter"):
            return None, RuntimeStatus(name, False, problem="tensorflow.lite has no Interpreter")
        # The documented last resort only (both TFLite runtimes missing), hence a dynamic import.
        tensorflow = importlib.import_module("tensorflow")
        return mod, RuntimeStatus(name, True, version=getattr(tensorflow, "__version__", None))
    pkg = importlib.import_module(module.split(".")[0])
    return mod, RuntimeStatus(name, True, version=getattr(pkg, "__version__", None))


def runtime_report() -> list[RuntimeStatus]:
    """Try the first two runtimes, and TensorFlow only when both are missing (it is heavy)."""
    out = []
    for name, module in RUNTIME_ORDER:
        if name == "tensorflow" and any(s.available for s in out):
            out.append(RuntimeStatus(name, False, problem="not tried (a lighter runtime is available)"))
            continue
        _, status = _try_import(name, module)
        out.append(status)
    return out


def import_runtime() -> tuple[Any, str, Optional[str]]:
    """The first runtime that imports: (interpreter module, name, version)."""
    tried = []
    for name, module in RUNTIME_ORDER:
        mod, status = _try_import(name, module)
        if mod is not None:
            return mod, name, status.version
        tried.append(f"{name}: {status.problem}")
    raise EdgeclsError(
        "no TFLite runtime found (tried " + "; ".join(tried) + "); install one with: pip install ai-edge-litert"
    )


def check_model_file(model_path: str | os.PathLike) -> Path:
    """A clear error for a missing file or one that is not a TFLite flatbuffer."""
    path = Path(model_path)
    if not path.is_file():
        raise EdgeclsError(f"model not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise EdgeclsError(
            f"{path} is not a valid .tflite model (no TFL3 flatbuffer identifier; "
            "export one with 'edgecls export RUN')"
        )
    return path


def load_interpreter(
    model_path: str | os.PathLike, *, num_threads: int, xnnpack: bool = True
) -> tuple[Interpreter, str]:
    """A ready (tensors allocated) interpreter and the runtime's name.

    ``num_threads`` is always passed (runtimes otherwise pick a default that differs between
    versions). ``xnnpack=False`` selects the op resolver without default delegates, the
    documented way to turn the XNNPACK delegate off.
    """
    if int(num_threads) < 1:
        raise EdgeclsError(f"threads must be >= 1, got {num_threads}")
    path = check_model_file(model_path)
    mod, name, _ = import_runtime()
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": int(num_threads)}
    if not xnnpack:
        resolver = getattr(mod, "OpResolverType", None)
        if resolver is None and name == "tensorflow":
            resolver = getattr(getattr(mod, "experimental", None), "OpResolverType", None)
        if resolver is None:
            raise EdgeclsError(f"{name} cannot turn XNNPACK off (no OpResolverType); drop --no-xnnpack")
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        # Quiet: "INFO: Created TensorFlow Lite XNNPACK delegate" on every load, and on a bad
        # file the native error lines repeat what the one Error line below says.
        with quiet_native_stderr(replay_on_error=False):
            interpreter = mod.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgeclsError(f"{path} is not a valid .tflite model ({detail})") from None
    return interpreter, name


def runtime_version(name: str) -> Optional[str]:
    """Version string of a runtime already imported by :func:`load_interpreter`."""
    for rname, module in RUNTIME_ORDER:
        if rname == name:
            try:
                return getattr(importlib.import_module(module.split(".")[0]), "__version__", None)
            except Exception:  # noqa: BLE001
                return None
    return None


# Measured (docs/device.md): on the same int8 file, tflite-runtime 2.14 gives exactly what
# ai-edge-litert gives with XNNPACK *off*, i.e. it runs int8 ops on TFLite's built-in kernels,
# while ai-edge-litert (the host's runtime, the one parity and the golden set used) runs them
# through XNNPACK, which rounds differently.
TFLITE_RUNTIME_NOTICE = (
    "tflite-runtime{version} is not the runtime export checked parity with: on int8 models it "
    "rounds differently from ai-edge-litert (built-in kernels, not XNNPACK), so outputs can differ by "
    "many 1/255 steps and predictions near a tie can flip. Install ai-edge-litert "
    "(pip install ai-edge-litert; Python 3.10-3.13) to run what parity checked, and run "
    "'edgecls verify MODEL' to see the difference on your model."
)


def runtime_notice(name: Optional[str], version: Optional[str] = None) -> Optional[str]:
    """What a user of this runtime should know before trusting host-side parity, or None."""
    if name == "tflite_runtime":
        return TFLITE_RUNTIME_NOTICE.format(version=f" {version}" if version else "")
    return None
