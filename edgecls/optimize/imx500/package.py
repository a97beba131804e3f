"""What ``imxconv-tf`` wrote: ``packerOut.zip`` (its ``dnnParams.xml``) and the memory report.

``dnnParams.xml`` (inside the zip and beside it) describes each network's tensors as the sensor
holds them: for every input and output tensor its dimensions, bits per element, scale, shift and
signedness, and the chip's L2 memory split. ``<name>_MemoryReport.json`` says how much of the
sensor's 8 MB the network takes and whether it fits. Both are read here with the standard
library, so the checks and the card never depend on the converter's log text.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError

PACKER_ZIP = "packerOut.zip"
DNN_PARAMS = "dnnParams.xml"
MEMORY_REPORT_GLOB = "*_MemoryReport.json"


@dataclass(frozen=True)
class SensorTensor:
    """One input or output tensor of the packaged network."""

    name: str
    shape: list[int]
    """Dimensions in the order of their ``ordinal`` (height, width, channels for an image)."""
    bits: int
    scale: float
    shift: int
    signed: bool


@dataclass(frozen=True)
class PackerInfo:
    """The network's tensors and memory as ``dnnParams.xml`` states them."""

    network: str
    inputs: list[SensorTensor]
    outputs: list[SensorTensor]
    l2memory: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensor(el: ET.Element) -> SensorTensor:
    dims = sorted(el.iter("dimension"), key=lambda d: int(d.get("ordinal", 0)))
    return SensorTensor(name=el.get("name", ""), shape=[int(d.get("size", 0)) for d in dims],
                        bits=int(el.get("bitsPerElement", 0)), scale=float(el.get("scale", 0.0)),
                        shift=int(el.get("shift", 0)), signed=el.get("format", "").lower() == "signed")


def parse_dnn_params(xml_text: str, files: Optional[list[str]] = None) -> PackerInfo:
    """The first network of a ``dnnParams.xml`` (edgecls packages one network per zip)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise EdgeclsError(f"{DNN_PARAMS} is not valid XML ({e})") from None
    net = root.find("./networks/network")
    if net is None:
        raise EdgeclsError(f"{DNN_PARAMS} names no network")
    mem = root.find("./l2memory")
    l2 = {k: int(v) for k, v in (mem.attrib.items() if mem is not None else []) if v.isdigit()}
    return PackerInfo(network=net.get("name", ""), inputs=[_tensor(t) for t in net.iter("inputTensor")],
                      outputs=[_tensor(t) for t in net.iter("outputTensor")], l2memory=l2, files=files or [])


def read_packer_zip(path: str | Path) -> PackerInfo:
    """Parse ``dnnParams.xml`` from inside a ``packerOut.zip``; one clear error if it is not one."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if DNN_PARAMS not in names:
                raise EdgeclsError(f"{path} is not an IMX500 converter package (no {DNN_PARAMS} inside)")
            return parse_dnn_params(z.read(DNN_PARAMS).decode("utf-8"), names)
    except (zipfile.BadZipFile, OSError) as e:
        raise EdgeclsError(f"{path} is not a readable zip ({e})") from None


def _size_bytes(text: str) -> Optional[int]:
    """'565.22KB' -> 578785; '8.00MB' -> 8388608 (the report's units are binary)."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?B)\s*", str(text))
    if not m:
        return None
    return int(round(float(m.group(1)) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m.group(2)]))


def read_memory_report(folder: str | Path) -> dict[str, Any]:
    """The converter's memory report, with sizes in bytes and the utilisation as a number."""
    found = sorted(Path(folder).glob(MEMORY_REPORT_GLOB))
    if not found:
        raise EdgeclsError(f"the IMX500 converter wrote no memory report in {folder}")
    raw = json.loads(found[0].read_text(encoding="utf-8")).get("Memory Report", {})
    percent = re.fullmatch(r"\s*([\d.]+)\s*%\s*", str(raw.get("Memory Utilization", "")))
    return {
        "utilization_percent": float(percent.group(1)) if percent else None,
        "fits": bool(raw.get("Fit In Chip")),
        "used_bytes": _size_bytes(raw.get("Memory Usage", "")),
        "available_bytes": _size_bytes(raw.get("Total Memory Available On Chip", "")),
        "runtime_bytes": _size_bytes(raw.get("Runtime Memory Physical Size", "")),
        "model_bytes": _size_bytes(raw.get("Model Memory Physical Size", "")),
        "input_persistent": raw.get("Input Persistent"),
        "report": raw,
    }
