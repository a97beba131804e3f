"""``edgecls doctor``'s AI Camera lines: is an IMX500 attached, its firmware upload, its tools.

Read from the places Picamera2's IMX500 helper reads (no import of picamera2 needed): a V4L2
sub-device whose driver module is ``imx500`` (``/sys/class/video4linux/v4l-subdevN/device/
driver/module``), and the driver's debugfs progress file ``imx500-fw:<device>/fw_progress``
("stage bytes total"; stage 0 loader, 1 main firmware, 2 network). debugfs is readable by root only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

MAX_SUBDEVS = 32
FW_STAGES = {0: "loader", 1: "main firmware", 2: "network"}
FIRMWARE_FILES = ("/lib/firmware/imx500_loader.fpk", "/lib/firmware/imx500_firmware.fpk")  # apt imx500-all
MODELS_DIR = "/usr/share/imx500-models"


def find_imx500(sys_root: Path = Path("/sys")) -> list[dict[str, str]]:
    """Every IMX500 sub-device: {"subdev": "/dev/v4l-subdevN", "device": "<i2c device id>"}."""
    found = []
    for i in range(MAX_SUBDEVS):
        dev = sys_root / "class" / "video4linux" / f"v4l-subdev{i}" / "device"
        module = dev / "driver" / "module"
        if module.is_symlink() and "imx500" in os.readlink(module):
            found.append({"subdev": f"/dev/v4l-subdev{i}", "device": Path(os.readlink(dev)).name})
    return found


def firmware_progress(device: str, debug_root: Path = Path("/sys/kernel/debug")) -> Optional[dict[str, Any]]:
    """The driver's upload progress, or None when debugfs is not readable (not root, not mounted)."""
    try:
        text = (debug_root / f"imx500-fw:{device}" / "fw_progress").read_text().split()
        stage, done, total = (int(v) for v in text[:3])
    except (OSError, ValueError):
        return None
    return {"stage": FW_STAGES.get(stage, str(stage)), "bytes": done, "total": total,
            "percent": round(100.0 * done / total, 1) if total else None}


def ai_camera_report(sys_root: Path = Path("/sys"), debug_root: Path = Path("/sys/kernel/debug")) -> dict[str, Any]:
    cams = find_imx500(sys_root)
    for cam in cams:
        cam["firmware_upload"] = firmware_progress(cam["device"], debug_root)
    return {"present": bool(cams), "cameras": cams,
            "firmware_files": [f for f in FIRMWARE_FILES if Path(f).is_file()],
            "packager": shutil.which("imx500-package"),
            "models_dir": MODELS_DIR if Path(MODELS_DIR).is_dir() else None}


def format_ai_camera(r: dict[str, Any]) -> list[str]:
    """Doctor's lines (``ok `` / ``-- `` prefixed like the rest of its report)."""
    if not r["present"]:
        return ["-- AI Camera (IMX500): none attached (no v4l-subdev with the imx500 driver)"]
    lines = []
    for cam in r["cameras"]:
        up = cam.get("firmware_upload")
        status = ("firmware upload status unreadable (debugfs: run doctor as root)" if up is None else
                  f"firmware upload: {up['stage']} {up['bytes']}/{up['total']} bytes"
                  + (f" ({up['percent']:g}%)" if up["percent"] is not None else ""))
        lines.append(f"ok AI Camera (IMX500) at {cam['subdev']} ({cam['device']}); {status}")
    fw = "ok " if len(r["firmware_files"]) == len(FIRMWARE_FILES) else "-- "
    lines.append(f"{fw}IMX500 firmware files: {len(r['firmware_files'])}/{len(FIRMWARE_FILES)}"
                 + ("" if fw == "ok " else " (sudo apt install imx500-all)"))
    lines.append(f"ok imx500-package: {r['packager']}" if r["packager"] else
                 "-- imx500-package: not installed (sudo apt install imx500-tools; edgecls deploy --imx500 needs it)")
    return lines
