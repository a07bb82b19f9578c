"""The command line: thin click commands that parse, call one function, print, exit."""

from pushgate.cli import farm as _farm  # noqa: F401 - registers the farm commands on main
from pushgate.cli.main import main

__all__ = ["main"]
