"""The system OpenSSH client, driven non-interactively, with its failures turned into one line.

Calling ``ssh``/``scp`` (rather than a Python SSH library) means the user's own setup applies
unchanged: ~/.ssh/config host aliases, ProxyJump, the agent, known_hosts. ``BatchMode=yes``
makes a refused key or an unknown host key fail at once instead of prompting for a password.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgecls.core.device_config import SshConfig
from edgecls.core.errors import EdgeclsError

SSH_FAILED = 255  # ssh's own exit code when the connection (not the remote command) failed
COMMAND_TIMEOUT_S = 1800  # pip installing opencv on a Pi over a slow link takes minutes

_USER_HOST = re.compile(r"^(?:(?P<user>[^@\s:/]+)@)?(?P<host>[^@\s:/]+)(?::(?P<dir>.*))?$")


@dataclass(frozen=True)
class Target:
    """``pi@raspberrypi.local:/opt/edgecls/model`` -> user, host, dir."""

    user: Optional[str]
    host: str
    dir: Optional[str] = None

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_target(text: str) -> Target:
    m = _USER_HOST.match(text.strip())
    if not m or not m.group("host"):
        raise EdgeclsError(f"expected USER@HOST[:DIR] (e.g. pi@raspberrypi.local), got {text!r}")
    return Target(user=m.group("user"), host=m.group("host"), dir=m.group("dir") or None)


# stderr patterns of OpenSSH -> what the user should hear. Order matters: the first match wins.
_SSH_ERRORS = (
    # "user@host: Permission denied (publickey)." is the login; a file's "Permission denied" has no "(".
    (("Permission denied (", "Too many authentication failures"),
     "{dest} refused the key (Permission denied); add your public key to ~/.ssh/authorized_keys on "
     "the device (ssh-copy-id {dest}) or pass --identity"),
    (("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "No ED25519 host key",
      "host key is not known"),
     "the host key of {host} is unknown or changed; connect once with 'ssh {dest}' to check and accept it"),
    (("Could not resolve hostname", "Name or service not known", "nodename nor servname"),
     "cannot reach {host}: the name does not resolve (check the spelling, or use the Pi's IP address)"),
    (("Connection refused",),
     "cannot reach {host}: connection refused (is the SSH server running? enable it with raspi-config)"),
    (("timed out", "No route to host", "Network is unreachable", "Connection reset", "Connection closed"),
     "cannot reach {host}: {reason}"),
)
_DISK_FULL = ("No space left on device", "Disk quota exceeded")


def explain_failure(stderr: str, target: Target) -> Optional[str]:
    """A one-line explanation of an ssh/scp failure, or None if it is not a connection problem."""
    for needles, message in _SSH_ERRORS:
        for needle in needles:
            if needle.lower() in stderr.lower():
                reason = next((ln.split(": ")[-1].strip() for ln in stderr.splitlines() if needle.lower() in ln.lower()),
                              needle)
                return message.format(dest=target.dest, host=target.host, reason=reason)
    return None


def is_disk_full(stderr: str) -> bool:
    return any(n.lower() in stderr.lower() for n in _DISK_FULL)


class Ssh:
    """Run commands on, and copy files to and from, one device."""

    def __init__(self, target: Target, cfg: SshConfig = SshConfig()):
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise EdgeclsError(f"'{tool}' not found: install the OpenSSH client (apt install openssh-client)")
        self.target = target
        self.cfg = cfg

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.cfg.connect_timeout)}"]
        if self.cfg.ssh_config:
            opts += ["-F", str(self.cfg.ssh_config)]
        if self.cfg.identity:
            opts += ["-i", str(self.cfg.identity), "-o", "IdentitiesOnly=yes"]
        for o in self.cfg.ssh_options:
            opts += ["-o", o]
        return opts

    def ssh_argv(self, command: str) -> list[str]:
        port = ["-p", str(self.cfg.port)] if self.cfg.port else []
        return ["ssh", *self._options(), *port, self.target.dest, command]

    def _call(self, argv: Sequence[str], what: str, timeout_s: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeclsError(f"{what} on {self.target.host} took longer than {timeout_s:.0f} s; gave up") from None

    def _raise_connection(self, proc: subprocess.CompletedProcess, what: str) -> None:
        why = explain_failure(proc.stderr, self.target)
        if why:
            raise EdgeclsError(why)
        last = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise EdgeclsError(f"{what} on {self.target.host} failed (ssh exit {proc.returncode}): {last[0]}")

    def run(self, command: str, *, what: str = "a command", check: bool = True,
            timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run a POSIX shell command on the device; connection failures raise one-line errors."""
        proc = self._call(self.ssh_argv(command), what, timeout_s)
        if proc.returncode == SSH_FAILED and (explain_failure(proc.stderr, self.target) or not proc.stdout):
            self._raise_connection(proc, what)
        if check and proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no message"]
            raise EdgeclsError(f"{what} on {self.target.host} failed (exit {proc.returncode}): {last[0]}")
        return proc

    def _scp(self, sources: Sequence[str], dest: str, what: str, timeout_s: float) -> None:
        port = ["-P", str(self.cfg.port)] if self.cfg.port else []
        proc = self._call(["scp", "-q", "-p", *self._options(), *port, *sources, dest], what, timeout_s)
        if proc.returncode == 0:
            return
        if is_disk_full(proc.stderr):
            raise EdgeclsError(f"the disk of {self.target.host} is full: {what} failed (No space left on device); "
                               "free some space there and deploy again (the previous model is still live)")
        self._raise_connection(proc, what)

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Copy local files into an existing folder on the device."""
        self._scp([str(f) for f in files], f"{self.target.dest}:{remote_dir.rstrip('/')}/",
                  f"copying {', '.join(Path(f).name for f in files)}", timeout_s)

    def get(self, remote_path: str, local_path: Path, *, timeout_s: float = 300) -> None:
        """Copy one file from the device."""
        local_path.parent.mkdir(parents=True, exist_ok=True)
        self._scp([f"{self.target.dest}:{remote_path}"], str(local_path), f"fetching {remote_path}", timeout_s)


def q(value: str | Path) -> str:
    """Quote for the device's POSIX shell; a leading ~/ stays unquoted so the shell expands it."""
    text = str(value)
    if text == "~":
        return '"$HOME"'
    if text.startswith("~/"):
        return '"$HOME"/' + shlex.quote(text[2:])
    return shlex.quote(text)
