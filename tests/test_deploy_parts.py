"""The pure parts of deploy and the bench JSON: targets, ssh failures, CPU features, the side-by-side table."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgecls.cli import cli

from edgecls.core.errors import EdgeclsError
from edgecls.deploy.compare import side_by_side
from edgecls.deploy.ssh import Target, explain_failure, parse_target, q
from edgecls.runtime.machine import cpu_features

PI4_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n\n"
    for i in range(4)) + "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
PI5_CPUINFO = "".join(
    f"processor\t: {i}\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    "asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n\n" for i in range(4))
X86_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n\nprocessor\t: 1\nflags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f\n"


@pytest.mark.parametrize("text, expected", [
    (PI4_CPUINFO, ["asimd"]),
    (PI5_CPUINFO, ["asimd", "asimddp", "asimdhp", "fphp"]),
    (X86_CPUINFO, ["sse4_2", "avx", "avx2", "fma", "f16c"]),  # avx512f on one core only: not usable
    ("", []),
])
def test_cpu_features(text, expected):
    assert cpu_features(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("pi@raspberrypi.local", Target("pi", "raspberrypi.local", None)),
    ("pi@10.0.0.7:/opt/edgecls/model", Target("pi", "10.0.0.7", "/opt/edgecls/model")),
    ("kitchen-pi", Target(None, "kitchen-pi", None)),
    ("kitchen-pi:models", Target(None, "kitchen-pi", "models")),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["", "@host", "pi@", "a b@host"])
def test_parse_target_rejects(text):
    with pytest.raises(EdgeclsError, match=r"expected USER@HOST\[:DIR\]"):
        parse_target(text)


@pytest.mark.parametrize("stderr, expected", [
    ("ssh: connect to host 10.9.9.9 port 22: Connection timed out\r\n",
     "cannot reach pi5: Connection timed out"),
    ("ssh: connect to host 10.9.9.9 port 22: No route to host\r\n", "cannot reach pi5: No route to host"),
    ("ssh: Could not resolve hostname pi5: Name or service not known\r\n",
     "cannot reach pi5: the name does not resolve (check the spelling, or use the Pi's IP address)"),
    ("pi@pi5: Permission denied (publickey).\r\n",
     "pi@pi5 refused the key (Permission denied); add your public key to ~/.ssh/authorized_keys on the device "
     "(ssh-copy-id pi@pi5) or pass --identity"),
    ("bash: line 1: edgecls: command not found\n", None),
    ("scp: dest open \"/opt/edgecls/model/x\": Permission denied\n", None),  # a folder's rights, not the key
])
def test_explain_failure(stderr, expected):
    assert explain_failure(stderr, Target("pi", "pi5")) == expected


def test_quote_keeps_home_expandable():
    assert q("~/edgecls/model") == "\"$HOME\"/edgecls/model"
    assert q("/opt/my models") == "'/opt/my models'"


def _report(board, features, p50s):
    return {"machine": {"board": board, "cpu_model": "x", "arch": "aarch64", "cores": 4, "cpu_features": features,
                        "dot_product": "asimddp" in features, "runtime": "ai_edge_litert", "runtime_version": "2.3.0",
                        "python": "3.11.2", "numpy": "2.4.6"},
            "results": [{"model": "/any/where/model_int8.tflite", "threads": t, "xnnpack": True,
                         "latency_ms": {"p50": p, "mean": p + 1}, "init_ms": 5.0} for t, p in p50s]}


def test_side_by_side_lines_up_devices_by_model_name():
    table = side_by_side([("pi4", _report("Raspberry Pi 4 Model B", ["asimd"], [(1, 40.0), (4, 17.25)])),
                          ("pi5", _report("Raspberry Pi 5 Model B", ["asimd", "asimddp"], [(4, 6.5)]))])
    lines = table.splitlines()
    assert lines[0].split() == ["pi4", "pi5"]
    p50_1 = next(ln for ln in lines if ln.startswith("model_int8.tflite 1 thr p50 ms")).split()[-2:]
    p50_4 = next(ln for ln in lines if ln.startswith("model_int8.tflite 4 thr p50 ms")).split()[-2:]
    assert p50_1 == ["40.00", "-"] and p50_4 == ["17.25", "6.500"]
    dot = next(ln for ln in lines if ln.startswith("int8 dot-product")).split()[-2:]
    assert dot == ["no", "yes"]


def test_bench_compare_cli(tmp_path):
    (tmp_path / "pi4.json").write_text(json.dumps(_report("Raspberry Pi 4 Model B", ["asimd"], [(4, 17.0)])))
    (tmp_path / "pi5.json").write_text(json.dumps(_report("Raspberry Pi 5 Model B", ["asimd", "asimddp"], [(4, 6.0)])))
    (tmp_path / "other.json").write_text(json.dumps({"frames": 3}))
    res = CliRunner().invoke(cli, ["bench-compare", str(tmp_path / "pi4.json"), str(tmp_path / "pi5.json")])
    assert res.exit_code == 0, res.output
    assert "Raspberry Pi 4 Model B" in res.output.splitlines()[0]
    assert next(ln for ln in res.output.splitlines() if ln.startswith("model_int8.tflite 4 thr p50")).split()[-2:] == \
        ["17.00", "6.000"]
    # Two reports from the same kind of board: columns named by file too.
    (tmp_path / "pi4b.json").write_text((tmp_path / "pi4.json").read_text())
    res = CliRunner().invoke(cli, ["bench-compare", str(tmp_path / "pi4.json"), str(tmp_path / "pi4b.json")])
    assert res.exit_code == 0, res.output
    assert "Raspberry Pi 4 Model B (pi4.json)" in res.output and "Raspberry Pi 4 Model B (pi4b.json)" in res.output


@pytest.mark.parametrize("name, expected", [
    ("other.json", "Error: {d}/other.json is not an 'edgecls bench --json' report"),
    ("broken.json", "Error: cannot read bench JSON {d}/broken.json: Expecting value: line 1 column 1 (char 0)"),
])
def test_bench_compare_rejects(tmp_path, name, expected):
    (tmp_path / "other.json").write_text(json.dumps({"frames": 3}))
    (tmp_path / "broken.json").write_text("")
    res = CliRunner().invoke(cli, ["bench-compare", str(tmp_path / name)])
    assert (res.exit_code, res.output.strip()) == (1, expected.format(d=tmp_path))
