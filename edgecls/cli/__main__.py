"""``python -m edgecls.cli``: the same command as ``edgecls`` (for venvs whose scripts are not on PATH)."""

from edgecls.cli import main

main()
