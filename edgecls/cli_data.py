"""CLI commands of the data area (placeholder until the area lands)."""

import click


def register(group: click.Group) -> None:
    """Add this area's commands to the edgecls group."""
