"""SSH connection options shared by ``edgecls deploy`` and ``edgecls bench --remote``."""

from __future__ import annotations

from typing import Any, Callable

from edgecls.cli.options import cli_fields, config_options
from edgecls.core.device_config import SshConfig


def ssh_options(f: Callable) -> Callable:
    """The SSH connection options (:class:`SshConfig`'s fields), shared by ``deploy`` and ``bench --remote``."""
    return config_options(SshConfig, *cli_fields(SshConfig))(f)


def ssh_config_from(options: dict[str, Any]) -> SshConfig:
    """Take the SSH options out of a command's ``options`` (in place) and build their config."""
    return SshConfig(**{name: options.pop(name) for name in cli_fields(SshConfig) if name in options})
