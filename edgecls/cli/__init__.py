"""The ``edgecls`` command: one click group, thin commands, errors at the boundary.

Each stage registers its commands from its own module (``cli.data``, ``cli.train``,
``cli.export``, ``cli.device``). None of them imports TensorFlow at import time, so
``edgecls camera`` and ``edgecls bench`` start fast on a Pi with no TensorFlow installed.
"""

from __future__ import annotations

import sys

import click

from edgecls import __version__
from edgecls.core.errors import EdgeclsError


class EdgeclsGroup(click.Group):
    """Turns library errors into one ``Error: ...`` line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeclsError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=EdgeclsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecls")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Train, prune, quantize and run image classifiers on small computers (no cloud)."""
    ctx.ensure_object(dict)


def _register_all() -> None:
    from edgecls.cli import data, device, export, train

    for module in (data, train, export, device):
        module.register(cli)
    from edgecls.cli import deploy

    deploy.register(cli)


_register_all()


def main() -> None:
    cli.main(prog_name="edgecls", auto_envvar_prefix="EDGECLS")


if __name__ == "__main__":  # pragma: no cover
    main()
