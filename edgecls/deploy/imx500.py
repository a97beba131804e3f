"""``edgecls deploy RUN USER@HOST[:DIR] --imx500``: the converter's package to the Pi, packaged there.

``imx500-package`` (Raspberry Pi's apt package ``imx500-tools``) only runs on a Pi, so the host
copies ``model_imx500.packerOut.zip`` and runs it on the device. Like every deploy, nothing
half-made goes live: one probe (the packager, the folder, free space) -> copy into a temp folder
inside DIR -> sha256 checked there -> ``imx500-package -i ZIP -o OUT`` in that temp folder ->
``network.rpk``, ``labels.txt`` and the card renamed into DIR, the network last.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from edgecls.core.device_config import DeployConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json
from edgecls.core.rundir import RunDir
from edgecls.deploy.bundle import DEVICE_DIR
from edgecls.deploy.ssh import Ssh, Target, parse_target, q
from edgecls.runtime.golden import sha256_of

PACKAGER = "imx500-package"
RPK_NAME = "network.rpk"
DEFAULT_DIR = "~/edgecls/imx500"
FREE_SPACE_FACTOR = 3  # the zip, the packager's unpacked copy and the .rpk briefly coexist

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Imx500Bundle:
    package: Path
    labels: Optional[Path]
    card: Optional[Path]
    results_root: Path

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.labels, self.card) if p is not None] + [self.package]


@dataclass
class Imx500DeployResult:
    target: Target
    remote_rpk: str
    remote_labels: Optional[str]
    record: Path


def find_imx500_bundle(source: str | Path) -> Imx500Bundle:
    """A run folder's ``export/model_imx500.packerOut.zip`` (+ labels, card), or such a zip itself."""
    src = Path(source)
    if src.is_dir():
        run = RunDir.open(src)
        files = run.imx500_files()
        if not files.package.is_file():
            raise EdgeclsError(f"{src} has no {files.package.relative_to(src)}; export it first: "
                               f"edgecls export {src} --imx500")
        package, root = files.package, run.path
    elif src.is_file() and src.name.endswith(".zip"):
        package, root = src, src.parent.parent if (src.parent.parent / "config.json").is_file() else src.parent
    else:
        raise EdgeclsError(f"{src} is neither a run folder nor an IMX500 converter package (.zip)")
    import zipfile

    try:
        with zipfile.ZipFile(package) as z:
            if "dnnParams.xml" not in z.namelist():
                raise EdgeclsError(f"{package} is not an IMX500 converter package (no dnnParams.xml inside)")
    except zipfile.BadZipFile:
        raise EdgeclsError(f"{package} is not a zip file") from None
    labels = package.with_name("labels.txt")
    card = package.with_name(package.name.replace(".packerOut.zip", ".card.json"))
    return Imx500Bundle(package=package, labels=labels if labels.is_file() else None,
                        card=card if card.is_file() and card != package else None, results_root=root)


def deploy_imx500(cfg: DeployConfig, *, echo: Echo = lambda s: None, packager: str = PACKAGER) -> Imx500DeployResult:
    """Copy, package on the device, place ``network.rpk``; one EdgeclsError line on any failure."""
    if cfg.service or cfg.install:
        raise EdgeclsError("--imx500 deploys the network only; --service and --install apply to .tflite deploys")
    target = parse_target(cfg.target)
    bundle = find_imx500_bundle(cfg.source)
    ssh = Ssh(target, cfg.ssh)
    host, remote_dir = target.host, target.dir or DEFAULT_DIR
    probe = "\n".join([
        f"P={q(packager)}",
        'if command -v "$P" >/dev/null 2>&1; then echo "packager=$(command -v "$P")"; fi',
        f"D={q(remote_dir)}",
        'case "$D" in "~"/*) D="$HOME/${D#\\~/}";; esac',
        'if mkdir -p "$D" 2>/dev/null && [ -w "$D" ]; then echo "dir=$(cd "$D" && pwd -P)"; '
        'echo "free_kb=$(df -Pk "$D" | awk \'NR==2 {print $4}\')"; fi',
    ])
    info = dict(line.split("=", 1) for line in ssh.run(probe, what="probing the device").stdout.splitlines()
                if "=" in line)
    if not info.get("packager"):
        raise EdgeclsError(f"{packager} is not installed on {host}: run 'sudo apt install imx500-tools' there "
                           "(Raspberry Pi OS; it only runs on a Pi), then deploy again")
    if not info.get("dir"):
        raise EdgeclsError(f"cannot create or write {remote_dir} on {host} (permissions?)")
    remote_dir = info["dir"]
    need = FREE_SPACE_FACTOR * sum(p.stat().st_size for p in bundle.files)
    if info.get("free_kb", "").isdigit() and int(info["free_kb"]) * 1024 < need:
        raise EdgeclsError(f"the disk of {host} is full: {remote_dir} has {int(info['free_kb']) / 1024:.1f} MB free, "
                           f"packaging needs {need / 1e6:.1f} MB (the previous network is still live)")
    tmp = ssh.run(f"mktemp -d {q(remote_dir)}/.edgecls-upload.XXXXXX", what="creating a temp folder").stdout.strip()
    try:
        echo(f"Copying {bundle.package.name} ({bundle.package.stat().st_size / 1e6:.2f} MB) to {host}:{remote_dir} ...")
        ssh.put(bundle.files, tmp)
        check = [f"cd {q(tmp)}"] + [
            f'[ "$(sha256sum < {q(p.name)} | cut -d" " -f1)" = {sha256_of(p)} ] '
            f'|| {{ echo "EDGECLS: {p.name} arrived damaged" >&2; exit 4; }}' for p in bundle.files]
        ssh.run("\n".join(check), what="checking the copied files (sha256)")
        echo(f"Packaging on {host} with {info['packager']} ...")
        proc = ssh.run(f"cd {q(tmp)} && {q(info['packager'])} -i {q(bundle.package.name)} -o out", what=packager,
                       check=False)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no message"]
            raise EdgeclsError(f"{packager} failed on {host} (exit {proc.returncode}): {why[0]}; nothing was replaced")
        rpk = posixpath.join(tmp, "out", RPK_NAME)
        if ssh.run(f"test -s {q(rpk)}", what="finding network.rpk", check=False).returncode != 0:
            raise EdgeclsError(f"{packager} on {host} wrote no {RPK_NAME}; nothing was replaced")
        moves = [(posixpath.join(tmp, p.name), posixpath.join(remote_dir, p.name))
                 for p in bundle.files if p != bundle.package] + [(rpk, posixpath.join(remote_dir, RPK_NAME))]
        ssh.run(" && ".join(f"mv -f {q(a)} {q(b)}" for a, b in moves), what="putting the network live")
    finally:
        ssh.run(f"rm -rf {q(tmp)}", what="cleaning up", check=False)
    remote_rpk = posixpath.join(remote_dir, RPK_NAME)
    record = bundle.results_root / DEVICE_DIR / host / f"deploy_imx500_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    atomic_write_json(record, {"package": bundle.package.name, "sha256": sha256_of(bundle.package),
                               "remote_rpk": remote_rpk, "packager": info["packager"], "target": cfg.target})
    return Imx500DeployResult(target=target, remote_rpk=remote_rpk,
                              remote_labels=posixpath.join(remote_dir, "labels.txt") if bundle.labels else None,
                              record=record)
