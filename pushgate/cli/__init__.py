"""The command line: thin click commands that parse, call one function, print, exit."""

from pushgate.cli.main import main

__all__ = ["main"]
