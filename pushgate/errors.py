"""The one base class of the errors a user can meet.

The CLI prints any `PushgateError` as one line on stderr and exits with status 2; anything
else reaching it is a bug (and is still printed as one line, with a hint to report it).
"""

from __future__ import annotations


class PushgateError(Exception):
    """Bad input or an unusable environment, said in one line."""
