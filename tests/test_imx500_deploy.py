"""deploy --imx500 against a real OpenSSH server on 127.0.0.1 (tests/loopback_sshd.py).

What is real here: ssh/scp, the copy into a temp folder, the sha256 check on the device, the
missing-packager error (this machine has no imx500-package), the renames. What is not: Raspberry
Pi's ``imx500-package`` only runs on a Pi (apt ``imx500-tools``), so the success and failure paths
use a STAND-IN script named by the test: it only checks it was handed a zip with a dnnParams.xml
and writes OUT/network.rpk, which proves our plumbing around the packager, not the packager.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.device_config import DeployConfig, SshConfig
from edgecls.core.errors import EdgeclsError
from edgecls.deploy.imx500 import deploy_imx500
from tests.loopback_sshd import start_sshd

pytestmark = pytest.mark.slow  # a real sshd

STAND_IN = """#!/bin/sh
# STAND-IN for Raspberry Pi's imx500-package (which runs on a Pi only): same arguments, checks its input
# is a converter package, writes OUT/network.rpk. It proves edgecls' plumbing, not the packager.
while [ $# -gt 0 ]; do case "$1" in -i) IN=$2; shift 2;; -o) OUT=$2; shift 2;; *) shift;; esac; done
python3 -c "import sys, zipfile; sys.exit('dnnParams.xml' not in zipfile.ZipFile(sys.argv[1]).namelist())" "$IN" \\
  || { echo "stand-in: $IN is not a packerOut.zip" >&2; exit 5; }
mkdir -p "$OUT" && printf 'stand-in rpk of %s\\n' "$(sha256sum < "$IN" | cut -d' ' -f1)" > "$OUT/network.rpk"
"""
FAILING = "#!/bin/sh\necho 'Error: unsupported converter version' >&2\nexit 3\n"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def make_run(root: Path) -> Path:
    """A run folder as export --imx500 leaves it (the zip is the test's own, with a dnnParams.xml)."""
    (root / "export").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"train": {"backbone": "mobilenet_v2", "size": 64}}))
    (root / "labels.txt").write_text("a\nb\nc\n")
    with zipfile.ZipFile(root / "export" / "model_imx500.packerOut.zip", "w") as z:
        z.writestr("dnnParams.xml", "<dnnParams/>")
        z.writestr("l2staticData.bin", b"\0" * 4096)
    (root / "export" / "labels.txt").write_text("a\nb\nc\n")
    (root / "export" / "model_imx500.card.json").write_text(json.dumps({"mode": "imx500"}))
    return root


def script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def cfg(run: Path, target: str, sshd) -> DeployConfig:
    return DeployConfig(source=str(run), target=target, ssh=SshConfig(ssh_config=str(sshd.client_config)))


def test_missing_packager_is_one_line_and_places_nothing(sshd, tmp_path):
    run, pi = make_run(tmp_path / "run"), tmp_path / "pi"
    res = CliRunner().invoke(cli, ["deploy", str(run), f"pi:{pi}", "--imx500", "-F", str(sshd.client_config)])
    assert res.exit_code == 1
    assert [ln for ln in res.output.splitlines() if ln.startswith("Error:")] == [
        "Error: imx500-package is not installed on pi: run 'sudo apt install imx500-tools' there (Raspberry Pi OS; "
        "it only runs on a Pi), then deploy again"]
    assert not (pi / "network.rpk").exists()


def test_network_goes_live_after_packaging_on_the_device(sshd, tmp_path):
    run, pi = make_run(tmp_path / "run"), tmp_path / "pi"
    pi.mkdir()
    (pi / "network.rpk").write_text("previous network\n")
    packager = script(tmp_path / "imx500-package", STAND_IN)
    result = deploy_imx500(cfg(run, f"pi:{pi}", sshd), packager=packager)
    package = run / "export" / "model_imx500.packerOut.zip"
    assert result.remote_rpk == str(pi / "network.rpk")
    # The stand-in saw the very bytes the host holds: the copy and its sha256 check worked.
    assert (pi / "network.rpk").read_text() == f"stand-in rpk of {hashlib.sha256(package.read_bytes()).hexdigest()}\n"
    assert (pi / "labels.txt").read_text() == "a\nb\nc\n" and (pi / "model_imx500.card.json").is_file()
    assert not (pi / package.name).exists() and not list(pi.glob(".edgecls-*"))
    record = json.loads(result.record.read_text())
    assert result.record.parent == run / "device" / "pi" and record["remote_rpk"] == str(pi / "network.rpk")


def test_a_failing_packager_keeps_the_previous_network(sshd, tmp_path):
    run, pi = make_run(tmp_path / "run"), tmp_path / "pi"
    pi.mkdir()
    (pi / "network.rpk").write_text("previous network\n")
    with pytest.raises(EdgeclsError, match=r"failed on pi \(exit 3\): Error: unsupported converter version; nothing was replaced"):
        deploy_imx500(cfg(run, f"pi:{pi}", sshd), packager=script(tmp_path / "imx500-package", FAILING))
    assert (pi / "network.rpk").read_text() == "previous network\n" and not list(pi.glob(".edgecls-*"))


def test_a_run_without_the_export_says_how(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "export" / "model_imx500.packerOut.zip").unlink()
    res = CliRunner().invoke(cli, ["deploy", str(run), "pi@nowhere", "--imx500"])
    assert res.exit_code == 1 and "has no export/model_imx500.packerOut.zip; export it first: edgecls export" in res.output
