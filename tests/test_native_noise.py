"""Library chatter a user cannot act on is held back from every command's stderr; everything else passes,
in order, and EDGECLS_DEBUG=1 shows it all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

NOISE = ("E0000 00:00:1796553916.981933   22718 util.cc:131] oneDNN supports DT_UINT8 only on platforms with "
         "AVX-512. Falling back to the default Eigen-based implementation if present.")
# What native code does: writes to file descriptor 2 directly, between the program's own lines.
SCRIPT = f"""
import os, sys
from edgecls.core.quiet import filter_native_stderr
with filter_native_stderr():
    print("before", file=sys.stderr, flush=True)
    os.write(2, {NOISE!r}.encode() + b"\\n")
    os.write(2, b"a warning the user needs\\n")
    print("after", file=sys.stderr, flush=True)
print("outside", file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize("debug", [False, True])
def test_known_noise_is_held_back_and_the_rest_passes_in_order(debug):
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECLS_DEBUG", "EDGECLS_TF_VERBOSE")}
    if debug:
        env["EDGECLS_DEBUG"] = "1"
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    expected = ["before", *([NOISE] if debug else []), "a warning the user needs", "after", "outside"]
    assert r.stderr.splitlines() == expected


def test_a_tensorflow_command_prints_no_onednn_line(tmp_path):
    """A real `edgecls data check` that decodes images through tf.data (where oneDNN logs its line on AVX-512
    machines): stderr holds nothing but what edgecls says."""
    from edgecls.data.synth import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", classes=2, per_class=3, size=32, seed=0)
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECLS_DEBUG", "EDGECLS_TF_VERBOSE")}
    r = subprocess.run([sys.executable, "-c", "from edgecls.cli import main; main()", "data", "check",
                        str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "oneDNN" not in r.stderr and "E0000" not in r.stderr, r.stderr
