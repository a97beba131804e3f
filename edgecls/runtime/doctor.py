"""``edgecls doctor``: what this device can run, and what is missing, in one report."""

from __future__ import annotations

import glob
import platform
from dataclasses import asdict
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError
from edgecls.runtime.ai_camera import ai_camera_report, format_ai_camera
from edgecls.runtime.interpreter import runtime_notice, runtime_report
from edgecls.runtime.machine import cpu_model


def opencv_report() -> dict[str, Any]:
    try:
        import cv2
    except ImportError as e:
        return {"available": False, "problem": f"not installed ({e}); pip install opencv-python-headless"}
    from edgecls.runtime.sources import cv2_has

    return {
        "available": True,
        "version": cv2.__version__,
        "gui": cv2_has("GUI"),
        "gstreamer": cv2_has("GStreamer"),
        "v4l2": cv2_has("v4l/v4l2"),
        "ffmpeg": cv2_has("FFMPEG"),
    }


def picamera_report() -> dict[str, Any]:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        from edgecls.runtime.sources import PICAMERA_HINT

        return {"available": False, "problem": PICAMERA_HINT}
    except Exception as e:  # noqa: BLE001 - libcamera bindings can fail in odd ways
        return {"available": False, "problem": f"{type(e).__name__}: {e}"}
    return {"available": True, "version": getattr(picamera2, "__version__", None)}


def model_report(model: str, threads: int = 1) -> dict[str, Any]:
    from edgecls.runtime.classifier import Classifier

    if model.lower().endswith(".rpk"):  # runs on the sensor: no TFLite runtime can load it
        return {"loads": False, "problem": f"{model} is an IMX500 network (runs on the AI Camera's sensor, not in a "
                                           "TFLite runtime); see the AI Camera lines, run it with --source imx500"}

    try:
        clf = Classifier(model, num_threads=threads)
    except EdgeclsError as e:
        return {"loads": False, "problem": str(e)}
    d = clf.describe()
    d["loads"] = True
    return d


def diagnose(model: Optional[str] = None) -> dict[str, Any]:
    from edgecls.runtime.loop import display_status

    runtimes = [asdict(s) for s in runtime_report()]
    display, why = display_status() if _has_cv2() else (False, "OpenCV missing")
    import numpy

    report: dict[str, Any] = {
        "os": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "runtimes": runtimes,
        "runtime_ok": any(r["available"] for r in runtimes),
        "opencv": opencv_report(),
        "picamera2": picamera_report(),
        "cameras": sorted(glob.glob("/dev/video*")),
        "display": {"available": display, "detail": why},
        "ai_camera": ai_camera_report(),
    }
    in_use = next((r for r in runtimes if r["available"]), None)
    if in_use is not None:
        report["runtime_notice"] = runtime_notice(in_use["name"], in_use["version"])
    if model is not None:
        report["model"] = model_report(model)
        if report["model"]["loads"]:
            verify = verify_report(model)
            if verify is not None:
                report["verify"] = verify
    return report


def verify_report(model: str, threads: int = 1) -> Optional[dict[str, Any]]:
    """``edgecls verify`` on the golden set beside the model; None when there is none."""
    from edgecls.runtime.golden import golden_path_for, verify_model

    if not golden_path_for(model).is_file():
        return None
    try:
        return verify_model(model, threads=threads)
    except EdgeclsError as e:
        return {"passed": False, "failure": str(e)}


def _has_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def exit_code(report: dict[str, Any]) -> int:
    """Non-zero only when nothing can run: no runtime, or the given model does not load."""
    if not report["runtime_ok"]:
        return 1
    if "model" in report and not report["model"]["loads"]:
        return 1
    if "verify" in report and not report["verify"]["passed"]:
        return 1
    return 0


def problem(report: dict[str, Any]) -> Optional[str]:
    """The one line that explains a non-zero :func:`exit_code`."""
    if not report["runtime_ok"]:
        return "no TFLite runtime imports"
    if "model" in report and not report["model"]["loads"]:
        return report["model"].get("problem") or "the model does not load"
    if "verify" in report and not report["verify"]["passed"]:
        return f"verify failed: {report['verify']['failure']}"
    return None


def format_report(report: dict[str, Any]) -> str:
    ok, no = "ok ", "-- "
    lines = [
        f"system   {report['os']} ({report['arch']}), {report['cpu_model']}",
        f"python   {report['python']}, numpy {report['numpy']}",
        "runtimes (first available is used):",
    ]
    for r in report["runtimes"]:
        detail = r["version"] if r["available"] else r["problem"]
        lines.append(f"  {ok if r['available'] else no}{r['name']:<15} {detail}")
    cv = report["opencv"]
    if cv["available"]:
        flags = ", ".join(f"{k} {'yes' if cv[k] else 'no'}" for k in ("gui", "gstreamer", "v4l2", "ffmpeg"))
        lines.append(f"{ok}opencv {cv['version']} ({flags})")
    else:
        lines.append(f"{no}opencv: {cv['problem']}")
    pc = report["picamera2"]
    lines.append(f"{ok}picamera2 {pc.get('version') or ''}" if pc["available"] else f"{no}picamera2: {pc['problem']}")
    cams = report["cameras"]
    lines.append(f"{ok if cams else no}cameras: {', '.join(cams) if cams else 'no /dev/video* devices'}")
    lines += format_ai_camera(report["ai_camera"]) if "ai_camera" in report else []
    disp = report["display"]
    lines.append(f"{ok if disp['available'] else no}display: {disp['detail']}"
                 + ("" if disp["available"] else " (camera runs headless)"))
    if "model" in report:
        m = report["model"]
        if m["loads"]:
            lines.append(
                f"{ok}model {m['model']}: input {m['input_shape']} {m['input_dtype']} "
                f"(scale, zero point {m['input_quantization']}), output {m['output_shape']} {m['output_dtype']}, "
                f"{len(m['labels'])} labels from {m['labels_source']}, runtime {m['runtime']}"
            )
        else:
            lines.append(f"{no}model: {m['problem']}")
    if "model" in report and "verify" not in report and report["model"]["loads"]:
        lines.append(f"{no}verify: no golden set beside the model (export writes one; copy it with the model)")
    if "verify" in report:
        v = report["verify"]
        if "n_images" in v:
            lines.append(
                f"{ok if v['passed'] else no}verify: {v['n_images']} golden images, "
                f"{'bit-identical' if v['bit_identical'] else 'outputs differ'} "
                f"(max |raw diff| {v['max_abs_raw_diff']:g}), top-1 agreement {v['top1_agreement']:.4f}"
                + ("" if v["passed"] else f"; FAILED: {v['failure']}")
            )
        else:
            lines.append(f"{no}verify: {v['failure']}")
    if report.get("runtime_notice"):
        lines.append(f"Note: {report['runtime_notice']}")
    if not report["runtime_ok"]:
        lines.append("No TFLite runtime imports: pip install ai-edge-litert")
    return "\n".join(lines)
