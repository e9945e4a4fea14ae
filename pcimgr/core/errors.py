"""One exception family; each kind carries the exit code the CLI returns.

Exit codes are part of the interface (docs/user-guide.md, "Errors and exit codes"):
scripts branch on them.
"""

from __future__ import annotations


class PcimgrError(Exception):
    """Base of every expected failure. The message is one line naming the fix."""

    exit_code = 1


class BadInput(PcimgrError):
    """The user typed something malformed (address, driver name, option)."""

    exit_code = 2


class NotFound(PcimgrError):
    """Well-formed but absent: no such function, group, domain, profile."""

    exit_code = 3


class Refused(PcimgrError):
    """The request is understood but unsafe; --force or another step is needed.

    forceable: --force would go on. The message then ends with FORCE_HINT, which
    a caller that cannot pass --force (apply, run by udev) replaces via `problem`.
    """

    exit_code = 4
    FORCE_HINT = "pass --force if the host can really do without it"

    def __init__(self, problem: str, forceable: bool = False) -> None:
        super().__init__(f"{problem}; {self.FORCE_HINT}" if forceable else problem)
        self.problem = problem
        self.forceable = forceable


class NeedsRoot(PcimgrError):
    """A write to the real /sys needs root."""

    exit_code = 5


class LibvirtFailure(PcimgrError):
    exit_code = 6


class RolledBack(PcimgrError):
    """A step failed and the completed steps were undone."""

    exit_code = 7


class Busy(PcimgrError):
    """Another pcimgr holds the lock, or the kernel said EBUSY."""

    exit_code = 8


class KernelError(PcimgrError):
    """A sysfs write was rejected by the kernel; carries the errno."""

    exit_code = 9

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class Mismatch(PcimgrError):
    """The host is not what it should be: status found drift, apply skipped a definition,
    doctor found a check that fails. The findings were printed before."""

    exit_code = 10


class Damaged(PcimgrError):
    """pcimgr's own state is unusable: a state or configuration file is malformed or not a
    regular file, or a state/configuration directory is a symbolic link. The message names
    the path and the way out (docs/safety.md, "What pcimgr does when its own state is
    damaged")."""

    exit_code = 11


class Interrupted(PcimgrError):
    """SIGINT or SIGTERM arrived; raised from the signal handler (interrupts.py)."""

    def __init__(self, signum: int) -> None:
        import signal
        self.signame = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signame}")
        self.exit_code = 128 + signum  # as a shell reports a process killed by the signal
