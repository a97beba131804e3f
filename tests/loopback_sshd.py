"""A real OpenSSH server on 127.0.0.1 for the deploy tests: throwaway host and user keys, a temp
authorized_keys, and an ssh_config with host aliases for the good and the failing cases.

The test user is the one running the tests (root on these machines and in CI, allowed with keys
only: ``PermitRootLogin prohibit-password``). ``StrictModes no`` because the keys live in a temp
folder, not ~/.ssh.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackSshd:
    dir: Path
    port: int
    closed_port: int
    client_config: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecls-test", "-f", str(path)], check=True)


def start_sshd(folder: Path) -> LoopbackSshd:
    if not Path(SSHD).is_file() or shutil.which("ssh") is None:
        raise RuntimeError("openssh-server/client missing: bash tools/install_system_packages.sh")
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "user_key", "other_key"):
        _keygen(folder / key)
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    port, closed_port = free_port(), free_port()
    cfg = folder / "sshd_config"
    cfg.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "StrictModes no", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
    ]))
    host_pub = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (folder / "empty_known_hosts").write_text("")
    user = getpass.getuser()
    common = ["  HostName 127.0.0.1", f"  User {user}", "  IdentitiesOnly yes", "  StrictHostKeyChecking yes",
              "  LogLevel ERROR"]
    client = folder / "ssh_config"
    client.write_text("\n".join([
        "Host pi", *common, f"  Port {port}", f"  IdentityFile {folder / 'user_key'}",
        f"  UserKnownHostsFile {folder / 'known_hosts'}",
        "Host pi-badkey", *common, f"  Port {port}", f"  IdentityFile {folder / 'other_key'}",
        f"  UserKnownHostsFile {folder / 'known_hosts'}",
        "Host pi-unknown", *common, f"  Port {port}", f"  IdentityFile {folder / 'user_key'}",
        f"  UserKnownHostsFile {folder / 'empty_known_hosts'}",
        "Host pi-closed", *common, f"  Port {closed_port}", f"  IdentityFile {folder / 'user_key'}",
        f"  UserKnownHostsFile {folder / 'known_hosts'}", "",
    ]))
    os.chmod(client, 0o600)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "sshd.log", "wb"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("sshd did not start listening")
    return LoopbackSshd(dir=folder, port=port, closed_port=closed_port, client_config=client, proc=proc)
