"""``edgecls deploy``: bundle -> device, checked there before it goes live, benchmarked, results home.

The order protects what is running on the device:

1. probe (one round trip): Python, the venv, the target folder, free space;
2. copy the bundle into a temp folder *inside* the target folder (same filesystem, so the final
   rename is atomic), check every file's sha256 there;
3. run ``edgecls verify`` on the temp copy: the device's runtime must reproduce the host's golden
   outputs before anything is replaced;
4. rename the files into place, the model last; only now is the new model live;
5. ``edgecls bench --json`` on the device; the JSON comes back into ``RUN/device/<host>/``.

Any failure before step 4 removes the temp folder and leaves the previous model as it was.
"""

from __future__ import annotations

import posixpath
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgecls.core.device_config import BenchConfig, DeployConfig, SshConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes, atomic_write_json, read_json
from edgecls.deploy.bundle import Bundle, find_bundle
from edgecls.deploy.install import build_wheel, install_on_device
from edgecls.deploy.ssh import Ssh, Target, parse_target, q

DEFAULT_DIR = "~/edgecls/model"
DEFAULT_VENVS = ("/opt/edgecls/venv", "~/edgecls-venv")  # device/install.sh's, then README's manual one
MIN_PYTHON = (3, 10)
# Room beyond the bundle itself: the temp copy and the final files briefly coexist with the old ones.
FREE_SPACE_MARGIN_BYTES = 1 << 20

Echo = Callable[[str], None]


@dataclass
class DeployResult:
    """What a deploy did, for the CLI to print and tests to check."""

    target: Target
    remote_dir: str
    remote_model: str
    venv: str
    installed: Optional[str] = None
    verify: Optional[dict[str, Any]] = None
    device_bench: Optional[dict[str, Any]] = None
    host_bench: Optional[dict[str, Any]] = None
    files: dict[str, Path] = field(default_factory=dict)
    restarted: Optional[str] = None


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


def _check_python(info: dict[str, str], python: str, host: str) -> None:
    if not info.get("python"):
        raise EdgeclsError(f"no Python on {host} ('{python}' not found); install it there: "
                           "sudo apt install python3 python3-venv, or pass --python PATH")
    ver = tuple(int(x) for x in info.get("python_version", "0.0").split("."))
    if ver < MIN_PYTHON:
        raise EdgeclsError(f"{info['python']} on {host} is Python {info.get('python_version')}; "
                           f"edgecls needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ (Raspberry Pi OS Bookworm has 3.11)")


def _abs_venv(venv: Optional[str], home: str) -> str:
    v = venv or DEFAULT_VENVS[1]
    return home + v[1:] if v.startswith("~") else v


def _remote_names(bundle: Bundle, model_name: str) -> dict[Path, str]:
    """Local file -> name on the device; golden set and card follow the model's name."""
    stem = model_name[: -len(".tflite")] if model_name.endswith(".tflite") else model_name
    names = {bundle.model: model_name}
    if bundle.golden:
        names[bundle.golden] = stem + ".golden.npz"
    if bundle.card:
        names[bundle.card] = stem + ".card.json"
    if bundle.labels:
        names[bundle.labels] = "labels.txt"
    return names


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


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


def remote_bench(ssh: Ssh, edgecls: str, model: str, *, threads: tuple[int, ...], runs: int, warmup: int,
                 local_json: Path, remote_dir: str) -> dict[str, Any]:
    """``edgecls bench --json`` on the device; the JSON copied to ``local_json``."""
    remote_json = posixpath.join(remote_dir, f".edgecls-bench-{_stamp()}-{id(local_json) % 10000}.json")
    try:
        return run_remote_bench(ssh, edgecls, bench_args(model, threads, runs, warmup, remote_json), remote_json,
                                local_json)
    finally:
        ssh.run(f"rm -f {q(remote_json)}", what="cleaning up", check=False)


def _verify_on_device(ssh: Ssh, edgecls: str, model: str, report_path: str, host: str) -> None:
    proc = ssh.run(f"{q(edgecls)} verify {q(model)} --json {q(report_path)}", what="edgecls verify", check=False)
    if proc.returncode == 0:
        return
    failed = next((ln.split("FAILED:", 1)[1].strip() for ln in proc.stdout.splitlines() if "FAILED:" in ln), None)
    if failed:
        raise EdgeclsError(f"verify failed on {host}: {failed}; the new model was not put live")
    why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no message"]
    raise EdgeclsError(f"edgecls verify on {host} failed (exit {proc.returncode}): {why[0]}; "
                       "the new model was not put live")


def _explain_copy_failure(ssh: Ssh, remote_dir: str) -> None:
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


def _restart(ssh: Ssh, unit: str) -> str:
    cmd = (f'if [ "$(id -u)" = 0 ]; then systemctl restart {q(unit)}; '
           f"else sudo -n systemctl restart {q(unit)}; fi")
    proc = ssh.run(cmd, what=f"restarting {unit}", check=False)
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise EdgeclsError(f"the model is live but restarting {unit} on {ssh.target.host} failed: {why[0]} "
                           f"(restart it there: sudo systemctl restart {unit})")
    return unit


def deploy(cfg: DeployConfig, *, echo: Echo = lambda s: None) -> DeployResult:
    """Run the whole deploy; raises EdgeclsError with one line on any failure."""
    target = parse_target(cfg.target)
    bundle = find_bundle(cfg.source, cfg.mode, need_golden=cfg.verify)
    if cfg.service and target.dir:
        raise EdgeclsError("--service deploys where the unit reads its model; do not also give :DIR")
    ssh = Ssh(target, cfg.ssh)
    host = target.host

    info = probe(ssh, python=cfg.python, venv=cfg.venv, remote_dir=None if cfg.service else (target.dir or DEFAULT_DIR),
                 service_env=cfg.service_env if cfg.service else None)
    _check_python(info, cfg.python, host)
    model_name = bundle.model.name
    if cfg.service:
        live = info.get("service_model")
        if not live:
            raise EdgeclsError(f"no EDGECLS_MODEL in {cfg.service_env} on {host}; install the service first "
                               "(device/install.sh) or deploy to USER@HOST:DIR")
        model_name = posixpath.basename(live)
        info.update(probe(ssh, python=cfg.python, venv=cfg.venv, remote_dir=posixpath.dirname(live)))
    if not info.get("dir"):
        raise EdgeclsError(f"cannot create or write {target.dir or DEFAULT_DIR} on {host} (permissions?)")
    remote_dir = info["dir"]
    need = bundle.size_bytes + FREE_SPACE_MARGIN_BYTES
    free = int(info.get("free_kb") or 0) * 1024
    if info.get("free_kb") and free < need:
        raise EdgeclsError(f"the disk of {host} is full: {remote_dir} has {free / 1e6:.1f} MB free, the bundle needs "
                           f"{need / 1e6:.1f} MB; free some space there (the previous model is still live)")

    venv = info["venv"]
    result = DeployResult(target=target, remote_dir=remote_dir, remote_model=posixpath.join(remote_dir, model_name),
                          venv=venv)
    tmp = ssh.run(f"mktemp -d {q(remote_dir)}/.edgecls-upload.XXXXXX", what="creating a temp folder").stdout.strip()
    try:
        if cfg.install:
            venv = _abs_venv(cfg.venv or venv or None, info.get("home", "~"))
            with tempfile.TemporaryDirectory(prefix="edgecls-deploy-") as local_tmp:
                wheel = Path(cfg.wheel) if cfg.wheel else build_wheel(Path(local_tmp))
                if not wheel.is_file():
                    raise EdgeclsError(f"wheel not found: {wheel}")
                echo(f"Installing {wheel.name}[device] into {venv} on {host} ...")
                result.installed = install_on_device(ssh, python=info["python"], venv=venv, wheel=wheel,
                                                     remote_tmp=tmp)
            ssh.run(f"rm -f {q(tmp)}/*.whl", what="cleaning up", check=False)
        if not venv:
            where = f"no {cfg.venv}/bin/edgecls" if cfg.venv else f"no {' or '.join(DEFAULT_VENVS)}"
            raise EdgeclsError(f"edgecls is not installed on {host} ({where}); "
                               "pass --install, or --venv PATH if it is elsewhere")
        result.venv = venv
        edgecls = posixpath.join(venv, "bin", "edgecls")

        echo(f"Copying {len(bundle.files)} files ({bundle.size_bytes / 1e6:.2f} MB) to {host}:{remote_dir} ...")
        try:
            ssh.put(bundle.files, tmp)
        except EdgeclsError:
            _explain_copy_failure(ssh, remote_dir)
            raise
        names = _remote_names(bundle, model_name)
        sums = bundle.sha256()
        check = [f"cd {q(tmp)}"]
        for local, remote in names.items():
            check.append(f'[ "$(sha256sum < {q(local.name)} | cut -d" " -f1)" = {sums[local.name]} ] '
                         f'|| {{ echo "EDGECLS: {local.name} arrived damaged" >&2; exit 4; }}')
        for local, remote in names.items():
            if local.name != remote:
                check.append(f"mv -f {q(local.name)} {q('.' + remote + '.staged')}")
        for local, remote in names.items():
            if local.name != remote:
                check.append(f"mv -f {q('.' + remote + '.staged')} {q(remote)}")
        ssh.run("\n".join(check), what="checking the copied files (sha256)")

        results_dir = bundle.results_dir(host)
        stem = model_name[: -len(".tflite")]
        stamp = _stamp()
        if cfg.verify:
            echo(f"Verifying on {host} before the model goes live ...")
            report_remote = posixpath.join(tmp, ".verify.json")
            _verify_on_device(ssh, edgecls, posixpath.join(tmp, model_name), report_remote, host)
            result.files["verify"] = results_dir / f"verify_{stem}_{stamp}.json"
            result.verify = fetch_json(ssh, report_remote, result.files["verify"])

        # Go live: each rename is atomic; the model goes last so it never runs with missing files.
        order = [n for loc, n in names.items() if loc != bundle.model] + [model_name]
        live = [f"mv -f {q(posixpath.join(tmp, n))} {q(posixpath.join(remote_dir, n))}" for n in order]
        ssh.run(" && ".join(live), what="putting the model live")
    finally:
        ssh.run(f"rm -rf {q(tmp)}", what="cleaning up", check=False)
    echo(f"Live on {host}: {result.remote_model}")

    if cfg.service:
        result.restarted = _restart(ssh, cfg.unit)
        echo(f"Restarted {cfg.unit} on {host}")

    echo(f"Benchmarking on {host} (threads {','.join(map(str, cfg.threads))}, {cfg.runs} runs) ...")
    result.files["device_bench"] = results_dir / f"bench_{stem}_{stamp}.json"
    result.device_bench = remote_bench(ssh, edgecls, result.remote_model, threads=cfg.threads, runs=cfg.runs,
                                       warmup=cfg.warmup, local_json=result.files["device_bench"],
                                       remote_dir=remote_dir)
    from edgecls.runtime.bench import run_bench

    result.files["host_bench"] = results_dir / f"host_bench_{stem}_{stamp}.json"
    result.host_bench = run_bench(BenchConfig(models=(str(bundle.model),), threads=cfg.threads, runs=cfg.runs,
                                              warmup=cfg.warmup, json=str(result.files["host_bench"])))
    # What was deployed where, with the options, so the deploy can be read and repeated.
    result.files["deploy"] = results_dir / f"deploy_{stem}_{stamp}.json"
    atomic_write_json(result.files["deploy"], {
        "deploy": asdict(cfg), "remote_model": result.remote_model, "venv": result.venv,
        "installed": result.installed, "sha256": {remote: sums[local.name] for local, remote in names.items()},
        "restarted": result.restarted,
    })
    return result


def bench_remote(target_text: str, models: tuple[str, ...], *, threads: tuple[int, ...], runs: int, warmup: int,
                 local_json: Path, ssh_cfg: SshConfig = SshConfig(), venv: Optional[str] = None,
                 python: str = "python3") -> dict[str, Any]:
    """``edgecls bench --remote``: copy the models to a temp folder on the device, bench, fetch the JSON."""
    target = parse_target(target_text)
    ssh = Ssh(target, ssh_cfg)
    info = probe(ssh, python=python, venv=venv, remote_dir=None)
    if not info["venv"]:
        raise EdgeclsError(f"edgecls is not installed on {target.host} (no {' or '.join(DEFAULT_VENVS)}); "
                           "install it with 'edgecls deploy MODEL USER@HOST --install', or pass --venv PATH")
    edgecls = posixpath.join(info["venv"], "bin", "edgecls")
    files = [Path(m) for m in models]
    for f in files:
        if not f.is_file():
            raise EdgeclsError(f"model not found: {f}")
    if len({f.name for f in files}) != len(files):
        raise EdgeclsError("models to bench remotely need distinct file names")
    tmp = ssh.run("mktemp -d /tmp/edgecls-bench.XXXXXX", what="creating a temp folder").stdout.strip()
    try:
        ssh.put(files, tmp)
        remote_json = posixpath.join(tmp, "bench.json")
        args = bench_args([posixpath.join(tmp, f.name) for f in files], threads, runs, warmup, remote_json)
        return run_remote_bench(ssh, edgecls, args, remote_json, local_json)
    finally:
        ssh.run(f"rm -rf {q(tmp)}", what="cleaning up", check=False)
