"""What edgecls runs on a device over SSH: the probe, ``edgecls verify`` and ``edgecls bench`` there, a
service restart, and each result's JSON brought home atomically.

:mod:`edgecls.deploy.deploy` puts these steps in the order that protects the live model;
``edgecls bench --remote`` uses the bench alone (:func:`bench_remote`).
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from typing import Any, Optional

from edgecls.core.device_config import BenchConfig, SshConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes, read_json
from edgecls.deploy.ssh import Ssh, parse_target, q

DEFAULT_VENVS = ("/opt/edgecls/venv", "~/edgecls-venv")  # device/install.sh's, then README's manual one
MIN_PYTHON = (3, 10)


def _kv(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            out[key] = value.strip()
    return out


def probe(ssh: Ssh, *, python: str, venv: Optional[str], remote_dir: Optional[str],
          service_env: Optional[str] = None) -> dict[str, str]:
    """One round trip: which Python, which venv has edgecls, the folder (created) and its free space."""
    candidates = [venv] if venv else list(DEFAULT_VENVS)
    lines = [
        f"PY={q(python)}",
        'if command -v "$PY" >/dev/null 2>&1; then echo "python=$(command -v "$PY")";'
        ' "$PY" -c \'import sys; print("python_version=%d.%d" % sys.version_info[:2])\' 2>/dev/null; fi',
        'echo "home=$HOME"',
        'echo "uname=$(uname -m)"',
    ]
    for v in candidates:
        lines.append(f'if [ -x {q(v)}/bin/edgecls ]; then echo "venv=$(cd {q(v)} && pwd -P)"; fi')
    if service_env:
        lines.append(f"if [ -r {q(service_env)} ]; then echo \"service_model=$(sed -n 's/^EDGECLS_MODEL=//p' "
                     f"{q(service_env)} | tail -n 1)\"; fi")
    if remote_dir:
        lines.append(f"D={q(remote_dir)}")
        lines.append('if mkdir -p "$D" 2>/dev/null && [ -w "$D" ]; then echo "dir=$(cd "$D" && pwd -P)"; '
                     'echo "free_kb=$(df -Pk "$D" | awk \'NR==2 {print $4}\')"; fi')
    info = _kv(ssh.run("\n".join(lines), what="probing the device").stdout)
    info.setdefault("venv", "")
    return info


def check_python(info: dict[str, str], python: str, host: str) -> None:
    if not info.get("python"):
        raise EdgeclsError(f"no Python on {host} ('{python}' not found); install it there: "
                           "sudo apt install python3 python3-venv, or pass --python PATH")
    ver = tuple(int(x) for x in info.get("python_version", "0.0").split("."))
    if ver < MIN_PYTHON:
        raise EdgeclsError(f"{info['python']} on {host} is Python {info.get('python_version')}; "
                           f"edgecls needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ (Raspberry Pi OS Bookworm has 3.11)")


def abs_venv(venv: Optional[str], home: str) -> str:
    v = venv or DEFAULT_VENVS[1]
    return home + v[1:] if v.startswith("~") else v


def fetch_json(ssh: Ssh, remote_path: str, local_path: Path) -> dict[str, Any]:
    """Bring one JSON back; it lands under its final name only once complete."""
    with tempfile.TemporaryDirectory(prefix="edgecls-fetch-") as tmp:
        part = Path(tmp) / local_path.name
        ssh.get(remote_path, part)
        data = part.read_bytes()
    atomic_write_bytes(local_path, data)
    return read_json(local_path)


def bench_args(models: str | list[str], threads: tuple[int, ...], runs: int, warmup: int, json_path: str) -> str:
    """The arguments of ``edgecls bench`` on the device (one place for both deploy and bench --remote)."""
    names = " ".join(q(m) for m in ([models] if isinstance(models, str) else models))
    return (f"bench {names} --threads {','.join(map(str, threads))} --runs {int(runs)} --warmup {int(warmup)} "
            f"--json {q(json_path)} --force")


def run_remote_bench(ssh: Ssh, edgecls: str, args: str, remote_json: str, local_json: Path) -> dict[str, Any]:
    """Run ``edgecls ARGS`` on the device and copy its bench JSON home; one clear line if it fails."""
    proc = ssh.run(f"{q(edgecls)} {args}", what="edgecls bench", check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no message"]
        raise EdgeclsError(f"edgecls bench on {ssh.target.host} failed: {why[0]}")
    return fetch_json(ssh, remote_json, local_json)


def verify_on_device(ssh: Ssh, edgecls: str, model: str, report_path: str, host: str) -> None:
    proc = ssh.run(f"{q(edgecls)} verify {q(model)} --json {q(report_path)}", what="edgecls verify", check=False)
    if proc.returncode == 0:
        return
    failed = next((ln.split("FAILED:", 1)[1].strip() for ln in proc.stdout.splitlines() if "FAILED:" in ln), None)
    if failed:
        raise EdgeclsError(f"verify failed on {host}: {failed}; the new model was not put live")
    why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no message"]
    raise EdgeclsError(f"edgecls verify on {host} failed (exit {proc.returncode}): {why[0]}; "
                       "the new model was not put live")


def explain_copy_failure(ssh: Ssh, remote_dir: str) -> None:
    """SFTP reports a full disk as a bare "Failure": ask the device's df (blocks and inodes)."""
    proc = ssh.run(f"df -Pk {q(remote_dir)} | awk 'NR==2 {{print $4}}'; df -Pi {q(remote_dir)} | awk 'NR==2 {{print $4}}'",
                   what="checking free space", check=False)
    values = proc.stdout.split()
    if proc.returncode == 0 and len(values) == 2 and values[0].isdigit() and values[1].isdigit():
        free_kb, free_inodes = int(values[0]), int(values[1])
        if free_kb < 64 or free_inodes == 0:
            what = "no free inodes" if free_inodes == 0 else f"{free_kb} KB free"
            raise EdgeclsError(f"the disk of {ssh.target.host} is full ({remote_dir}: {what}): the copy failed "
                               "part-way; free some space there (the previous model is still live)")


def restart(ssh: Ssh, unit: str) -> str:
    cmd = (f'if [ "$(id -u)" = 0 ]; then systemctl restart {q(unit)}; '
           f"else sudo -n systemctl restart {q(unit)}; fi")
    proc = ssh.run(cmd, what=f"restarting {unit}", check=False)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise EdgeclsError(f"the model is live but restarting {unit} on {ssh.target.host} failed: {why[0]} "
                           f"(restart it there: sudo systemctl restart {unit})")
    return unit


def bench_remote(target_text: str, bench: BenchConfig, local_json: Path, *, ssh_cfg: SshConfig = SshConfig(),
                 venv: Optional[str] = None) -> dict[str, Any]:
    """``edgecls bench --remote``: copy ``bench.models`` to a temp folder on the device, bench them with
    ``bench``'s threads, runs and warm-up, and fetch the JSON to ``local_json``."""
    target = parse_target(target_text)
    ssh = Ssh(target, ssh_cfg)
    info = probe(ssh, python="python3", venv=venv, remote_dir=None)
    if not info["venv"]:
        raise EdgeclsError(f"edgecls is not installed on {target.host} (no {' or '.join(DEFAULT_VENVS)}); "
                           "install it with 'edgecls deploy MODEL USER@HOST --install', or pass --venv PATH")
    edgecls = posixpath.join(info["venv"], "bin", "edgecls")
    files = [Path(m) for m in bench.models]
    for f in files:
        if not f.is_file():
            raise EdgeclsError(f"model not found: {f}")
    if len({f.name for f in files}) != len(files):
        raise EdgeclsError("models to bench remotely need distinct file names")
    tmp = ssh.run("mktemp -d /tmp/edgecls-bench.XXXXXX", what="creating a temp folder").stdout.strip()
    try:
        ssh.put(files, tmp)
        remote_json = posixpath.join(tmp, "bench.json")
        args = bench_args([posixpath.join(tmp, f.name) for f in files], bench.threads, bench.runs, bench.warmup,
                          remote_json)
        return run_remote_bench(ssh, edgecls, args, remote_json, local_json)
    finally:
        ssh.run(f"rm -rf {q(tmp)}", what="cleaning up", check=False)
