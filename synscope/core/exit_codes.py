"""Exit codes scripts can rely on (also listed in the README)."""

import sys
from enum import IntEnum
from typing import Any, NoReturn

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # a build-time tool, absent where synscope runs from its Python sources

    def mypyc_attr(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc,no-redef]
        return lambda cls: cls


class ExitCode(IntEnum):
    """Process exit status of every synscope command."""

    OK = 0  # done; probe: every probed port open
    ERROR = 1  # runtime failure (network error, tool missing); message on stderr
    USAGE = 2  # bad option, bad port or host: nothing was done (click's own code)
    CLOSED = 3  # probe: at least one port closed (RST), none filtered
    FILTERED = 4  # probe: at least one port filtered (ICMP error or no answer)
    PARTIAL_INPUT = 5  # read: a capture ended mid-record or was corrupt; what came before is reported
    BAD_INPUT = 6  # read: a file is not a capture, is empty, or cannot be opened
    NO_PRIVILEGE = 77  # raw sockets need root or CAP_NET_RAW (EX_NOPERM)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM: partial results printed, everything cleaned up (128 + SIGINT)


# probe and demo subclass it outside the compiled packages
@mypyc_attr(allow_interpreted_subclasses=True)
class CommandError(Exception):
    """A command cannot go on: the message is one line for the user, ``code`` the exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: ExitCode) -> NoReturn:
    """The one-line error every command prints (``synscope: ...`` on stderr), then exit with ``code``."""
    sys.stderr.write(f"synscope: {message}\n")
    sys.stderr.flush()
    sys.exit(int(code))
