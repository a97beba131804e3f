"""SSH connection options shared by ``edgecls deploy`` and ``edgecls bench --remote``."""

from __future__ import annotations

from typing import Callable, Optional

import click

from edgecls.core.config import SshConfig, field_help


def ssh_options(f: Callable) -> Callable:
    """The SSH connection options, shared by ``deploy`` and ``bench --remote``."""
    for decorator in reversed([
        click.option("--ssh-config", "-F", type=click.Path(dir_okay=False), default=None,
                     help=field_help(SshConfig, "ssh_config")),
        click.option("--identity", "-i", type=click.Path(dir_okay=False), default=None,
                     help=field_help(SshConfig, "identity")),
        click.option("--port", "-p", type=click.IntRange(1, 65535), default=None, help=field_help(SshConfig, "port")),
        click.option("--ssh-option", "-o", "ssh_option", multiple=True, help=field_help(SshConfig, "ssh_options")),
        click.option("--connect-timeout", type=click.IntRange(1, 600), default=SshConfig.connect_timeout,
                     show_default=True, help=field_help(SshConfig, "connect_timeout")),
    ]):
        f = decorator(f)
    return f


def ssh_config_from(ssh_config: Optional[str], identity: Optional[str], port: Optional[int],
                    ssh_option: tuple[str, ...], connect_timeout: int) -> SshConfig:
    return SshConfig(ssh_config=ssh_config, identity=identity, port=port, ssh_options=tuple(ssh_option),
                     connect_timeout=connect_timeout)
