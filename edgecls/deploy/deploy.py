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

from edgecls.core.device_config import BenchConfig, DeployConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json
from edgecls.deploy.bundle import Bundle, find_bundle
from edgecls.deploy.install import build_wheel, install_on_device
from edgecls.deploy.remote import (
    DEFAULT_VENVS, abs_venv, bench_args, check_python, explain_copy_failure, fetch_json, probe, restart,
    run_remote_bench, verify_on_device,
)
from edgecls.deploy.ssh import Ssh, Target, parse_target, q

DEFAULT_DIR = "~/edgecls/model"
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


@dataclass
class _Plan:
    """A deploy settled before anything is copied: the bundle, the probed device, where the model goes."""

    target: Target
    bundle: Bundle
    ssh: Ssh
    info: dict[str, str]
    """The probe's answers (python, venv, home, dir, free_kb), for the folder the model goes into."""
    remote_dir: str
    """The folder on the device, resolved (``pwd -P``) and known writable."""
    model_name: str
    """The model's file name on the device: the bundle's, or the one the unit reads under --service."""

    @property
    def host(self) -> str:
        return self.target.host

    @property
    def remote_model(self) -> str:
        return posixpath.join(self.remote_dir, self.model_name)


@dataclass
class _Staged:
    """The bundle as staged on the device: the edgecls that checks it, file names and checksums, results folder."""

    edgecls: str
    names: dict[Path, str]
    """Local file -> its name on the device."""
    sums: dict[str, str]
    """Local file name -> sha256, as checked on the device."""
    results_dir: Path
    stem: str
    stamp: str

    def result_path(self, kind: str) -> Path:
        """``RESULTS/<kind>_<stem>_<stamp>.json``: one deploy's files share the stem and the stamp."""
        return self.results_dir / f"{kind}_{self.stem}_{self.stamp}.json"


def deploy(cfg: DeployConfig, *, echo: Echo = lambda s: None) -> DeployResult:
    """Run the whole deploy (steps 1-5 above); raises EdgeclsError with one line on any failure.

    Returns what was done; the verify and bench reports and a record of the deploy are written to
    ``result.files``, in ``RUN/device/<host>/`` (beside the model when deploying a bare .tflite).
    """
    plan = _plan(cfg)
    result = DeployResult(target=plan.target, remote_dir=plan.remote_dir, remote_model=plan.remote_model,
                          venv=plan.info["venv"])
    staged = _put_live(cfg, plan, result, echo)
    echo(f"Live on {plan.host}: {result.remote_model}")

    if cfg.service:
        result.restarted = restart(plan.ssh, cfg.unit)
        echo(f"Restarted {cfg.unit} on {plan.host}")

    _bench_both(cfg, plan, result, staged, echo)
    _record(cfg, result, staged)
    return result


def _plan(cfg: DeployConfig) -> _Plan:
    """Find the bundle and probe the device (step 1); raises before anything is copied if the deploy cannot work.

    Checked here: the target's form, the device's Python, a writable folder (the unit's under --service)
    and room there for the bundle.
    """
    target = parse_target(cfg.target)
    bundle = find_bundle(cfg.source, cfg.mode, need_golden=cfg.verify)
    if cfg.service and target.dir:
        raise EdgeclsError("--service deploys where the unit reads its model; do not also give :DIR")
    ssh = Ssh(target, cfg.ssh)
    host = target.host

    info = probe(ssh, python=cfg.python, venv=cfg.venv, remote_dir=None if cfg.service else (target.dir or DEFAULT_DIR),
                 service_env=cfg.service_env if cfg.service else None)
    check_python(info, cfg.python, host)
    model_name = bundle.model.name
    if cfg.service:
        model_name, folder_info = _service_model(cfg, ssh, info)
        info.update(folder_info)
    if not info.get("dir"):
        raise EdgeclsError(f"cannot create or write {target.dir or DEFAULT_DIR} on {host} (permissions?)")
    _check_free_space(info, bundle, host)
    return _Plan(target=target, bundle=bundle, ssh=ssh, info=info, remote_dir=info["dir"], model_name=model_name)


def _service_model(cfg: DeployConfig, ssh: Ssh, info: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The model file the unit reads (EDGECLS_MODEL): its name, and the probe of its folder.

    The deploy replaces that file in place, so the unit needs no change beyond a restart.
    """
    live = info.get("service_model")
    if not live:
        raise EdgeclsError(f"no EDGECLS_MODEL in {cfg.service_env} on {ssh.target.host}; install the service first "
                           "(device/install.sh) or deploy to USER@HOST:DIR")
    return posixpath.basename(live), probe(ssh, python=cfg.python, venv=cfg.venv, remote_dir=posixpath.dirname(live))


def _check_free_space(info: dict[str, str], bundle: Bundle, host: str) -> None:
    """Raise when the probed folder has less room than the bundle needs (unknown free space is let through)."""
    remote_dir = info["dir"]
    need = bundle.size_bytes + FREE_SPACE_MARGIN_BYTES
    free = int(info.get("free_kb") or 0) * 1024
    if info.get("free_kb") and free < need:
        raise EdgeclsError(f"the disk of {host} is full: {remote_dir} has {free / 1e6:.1f} MB free, the bundle needs "
                           f"{need / 1e6:.1f} MB; free some space there (the previous model is still live)")


def _put_live(cfg: DeployConfig, plan: _Plan, result: DeployResult, echo: Echo) -> _Staged:
    """Steps 2-4: copy the bundle into a temp folder beside the live model, check and verify it there, rename it in.

    The temp folder is removed whatever happens, so any failure before the renames leaves the previous model
    live. Fills ``result.installed``, ``result.venv`` and ``result.verify`` on the way.
    """
    ssh = plan.ssh
    mktemp = f"mktemp -d {q(plan.remote_dir)}/.edgecls-upload.XXXXXX"
    tmp = ssh.run(mktemp, what="creating a temp folder").stdout.strip()
    try:
        venv = plan.info["venv"]
        if cfg.install:
            venv, result.installed = _install(cfg, plan, tmp, echo)
        edgecls = _device_edgecls(cfg, venv, plan.host)
        result.venv = venv

        names, sums = _upload(plan, tmp, echo)
        staged = _Staged(edgecls=edgecls, names=names, sums=sums, results_dir=plan.bundle.results_dir(plan.host),
                         stem=plan.model_name[: -len(".tflite")], stamp=_stamp())
        if cfg.verify:
            echo(f"Verifying on {plan.host} before the model goes live ...")
            result.files["verify"] = staged.result_path("verify")
            result.verify = _verify_staged(plan, edgecls, tmp, result.files["verify"])
        _rename_into_place(plan, tmp, names)
    finally:
        ssh.run(f"rm -rf {q(tmp)}", what="cleaning up", check=False)
    return staged


def _install(cfg: DeployConfig, plan: _Plan, tmp: str, echo: Echo) -> tuple[str, str]:
    """Install this host's edgecls wheel (built unless --wheel) into the device's venv: (venv, what was installed).

    The wheel travels through ``tmp`` on the device and is removed from it once installed.
    """
    ssh = plan.ssh
    venv = abs_venv(cfg.venv or plan.info["venv"] or None, plan.info.get("home", "~"))
    with tempfile.TemporaryDirectory(prefix="edgecls-deploy-") as local_tmp:
        wheel = Path(cfg.wheel) if cfg.wheel else build_wheel(Path(local_tmp))
        if not wheel.is_file():
            raise EdgeclsError(f"wheel not found: {wheel}")
        echo(f"Installing {wheel.name}[device] into {venv} on {plan.host} ...")
        installed = install_on_device(ssh, python=plan.info["python"], venv=venv, wheel=wheel, remote_tmp=tmp)
    ssh.run(f"rm -f {q(tmp)}/*.whl", what="cleaning up", check=False)
    return venv, installed


def _device_edgecls(cfg: DeployConfig, venv: str, host: str) -> str:
    """The device's ``edgecls`` in ``venv``; raises saying how to get one when no venv was found."""
    if not venv:
        where = f"no {cfg.venv}/bin/edgecls" if cfg.venv else f"no {' or '.join(DEFAULT_VENVS)}"
        raise EdgeclsError(f"edgecls is not installed on {host} ({where}); "
                           "pass --install, or --venv PATH if it is elsewhere")
    return posixpath.join(venv, "bin", "edgecls")


def _upload(plan: _Plan, tmp: str, echo: Echo) -> tuple[dict[Path, str], dict[str, str]]:
    """Copy the bundle into ``tmp``, check every file's sha256 there, give each its device name: (names, sums).

    A full disk is reported as such (SFTP only says "Failure"); a damaged file fails the check script.
    """
    bundle, ssh = plan.bundle, plan.ssh
    echo(f"Copying {len(bundle.files)} files ({bundle.size_bytes / 1e6:.2f} MB) to {plan.host}:{plan.remote_dir} ...")
    try:
        ssh.put(bundle.files, tmp)
    except EdgeclsError:
        explain_copy_failure(ssh, plan.remote_dir)
        raise
    names = _remote_names(bundle, plan.model_name)
    sums = bundle.sha256()
    ssh.run(_check_script(tmp, names, sums), what="checking the copied files (sha256)")
    return names, sums


def _check_script(tmp: str, names: dict[Path, str], sums: dict[str, str]) -> str:
    """Shell run in ``tmp``: exit 4 naming the first damaged file, else rename each file to its device name.

    The renames go through hidden ``.NAME.staged`` names so that one file's new name cannot clobber
    another file that is still to be renamed.
    """
    check = [f"cd {q(tmp)}"]
    for local in names:
        check.append(f'[ "$(sha256sum < {q(local.name)} | cut -d" " -f1)" = {sums[local.name]} ] '
                     f'|| {{ echo "EDGECLS: {local.name} arrived damaged" >&2; exit 4; }}')
    for local, remote in names.items():
        if local.name != remote:
            check.append(f"mv -f {q(local.name)} {q('.' + remote + '.staged')}")
    for local, remote in names.items():
        if local.name != remote:
            check.append(f"mv -f {q('.' + remote + '.staged')} {q(remote)}")
    return "\n".join(check)


def _verify_staged(plan: _Plan, edgecls: str, tmp: str, local_json: Path) -> dict[str, Any]:
    """``edgecls verify`` on the model still in ``tmp`` (step 3); its report copied to ``local_json``."""
    report_remote = posixpath.join(tmp, ".verify.json")
    verify_on_device(plan.ssh, edgecls, posixpath.join(tmp, plan.model_name), report_remote, plan.host)
    return fetch_json(plan.ssh, report_remote, local_json)


def _rename_into_place(plan: _Plan, tmp: str, names: dict[Path, str]) -> None:
    """Step 4: move the checked files from ``tmp`` into the live folder; only now is the new model live."""
    # Each rename is atomic; the model goes last so it never runs with missing files.
    order = [n for loc, n in names.items() if loc != plan.bundle.model] + [plan.model_name]
    live = [f"mv -f {q(posixpath.join(tmp, n))} {q(posixpath.join(plan.remote_dir, n))}" for n in order]
    plan.ssh.run(" && ".join(live), what="putting the model live")


def _bench_both(cfg: DeployConfig, plan: _Plan, result: DeployResult, staged: _Staged, echo: Echo) -> None:
    """Step 5: bench the live model on the device, then the same bundle on this host, with the same options."""
    echo(f"Benchmarking on {plan.host} (threads {','.join(map(str, cfg.threads))}, {cfg.runs} runs) ...")
    result.files["device_bench"] = staged.result_path("bench")
    result.device_bench = _bench_live_model(cfg, plan, staged.edgecls, result.files["device_bench"])
    from edgecls.runtime.bench import run_bench

    result.files["host_bench"] = staged.result_path("host_bench")
    result.host_bench = run_bench(BenchConfig(models=(str(plan.bundle.model),), threads=cfg.threads, runs=cfg.runs,
                                              warmup=cfg.warmup, json=str(result.files["host_bench"])))


def _bench_live_model(cfg: DeployConfig, plan: _Plan, edgecls: str, local_json: Path) -> dict[str, Any]:
    """``edgecls bench --json`` of the live model on the device, with the deploy's options; JSON to ``local_json``.

    The device writes the JSON under a hidden name in the model's folder (known writable), removed after.
    """
    remote_json = posixpath.join(plan.remote_dir, f".edgecls-bench-{_stamp()}-{id(local_json) % 10000}.json")
    try:
        args = bench_args(plan.remote_model, cfg.threads, cfg.runs, cfg.warmup, remote_json)
        return run_remote_bench(plan.ssh, edgecls, args, remote_json, local_json)
    finally:
        plan.ssh.run(f"rm -f {q(remote_json)}", what="cleaning up", check=False)


def _record(cfg: DeployConfig, result: DeployResult, staged: _Staged) -> None:
    """Write what was deployed where, with the options, so the deploy can be read and repeated."""
    result.files["deploy"] = staged.result_path("deploy")
    atomic_write_json(result.files["deploy"], {
        "deploy": asdict(cfg), "remote_model": result.remote_model, "venv": result.venv,
        "installed": result.installed,
        "sha256": {remote: staged.sums[local.name] for local, remote in staged.names.items()},
        "restarted": result.restarted,
    })
