"""The ``edgecls`` command: one click group, thin commands, errors at the boundary.

Each stage registers its commands from its own module (``cli.data``, ``cli.train``,
``cli.export``, ``cli.device``). None of them imports TensorFlow at import time, so
``edgecls camera`` and ``edgecls bench`` start fast on a Pi with no TensorFlow installed.
"""

from __future__ import annotations

import os
import sys

import click

from edgecls import __version__
from edgecls.core.errors import EdgeclsError

DEBUG_ENV = "EDGECLS_DEBUG"  # =1: let errors keep their traceback (for bug reports)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class EdgeclsGroup(click.Group):
    """Turns every error into one ``Error: ...`` line and exit code 1; the traceback only with EDGECLS_DEBUG=1.

    The tool's own errors say what to do; OS errors (permissions, full disk) name the file and
    the user; anything else (a library's exception) is still one line, plus how to see more.
    """

    def invoke(self, ctx: click.Context):
        from edgecls.core.io import describe_os_error
        from edgecls.core.quiet import filter_native_stderr, quiet_video_logs

        quiet_video_logs()
        try:
            with filter_native_stderr():
                return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EdgeclsError as e:
            if _debug():
                raise
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except OSError as e:
            if _debug():
                raise
            raise click.ClickException(describe_os_error(e)) from None
        except Exception as e:  # noqa: BLE001 - the boundary: a user never sees a traceback by default
            if _debug():
                raise
            raise click.ClickException(
                f"unexpected {type(e).__name__}: {_first_line(e)} (run with {DEBUG_ENV}=1 for the traceback)"
            ) from None


@click.group(cls=EdgeclsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecls")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Train, prune, quantize and run image classifiers on small computers (no cloud)."""
    ctx.ensure_object(dict)


def _register_all() -> None:
    from edgecls.cli import data, device, export, report, train

    for module in (data, train, export, device, report):
        module.register(cli)
    from edgecls.cli import deploy

    deploy.register(cli)


_register_all()


def main() -> None:
    cli.main(prog_name="edgecls", auto_envvar_prefix="EDGECLS")


if __name__ == "__main__":  # pragma: no cover
    main()
