"""The rules of the commands' numbers (a duration, a count, an index, a VLAN), one range per
field, shared by the CLI's options and the fleet layer (`checked`), so that an Ansible
module takes exactly what the matching command takes. Nothing here completes on Tab: the
fleet imports it without the CLI's completion (which knows the simulated profiles)."""

from __future__ import annotations

import math
from typing import Any

import click

from pcimgr.core.errors import BadInput


class Seconds(click.FloatRange):
    """A duration: a finite number within the range (nan passes every comparison, inf
    would wait forever)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        # a float too: a front end without click (Ansible's type float) hands over nan
        if not math.isfinite(_float_or(value)):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return super().convert(value, param, ctx)


def _float_or(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0  # click's own message says it is not a number


class Digits(click.IntRange):
    """A count, index or VLAN id: ASCII digits 0-9 only (int() also takes '٣' and ' 3_0'),
    within the one range the field has in every command."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            self.fail(f"{value!r} is not a number written with the digits 0-9", param, ctx)
        if isinstance(value, (bool, float)):  # from a front end without click: no true/1.5
            self.fail(f"{value!r} is not a whole number", param, ctx)
        return super().convert(value, param, ctx)


# The rules the CLI and the fleet modules share (one range per field, as the commands say)
TIMEOUT = Seconds(0.1, 3600)          # waiting for the kernel or a guest
LOCK_TIMEOUT = Seconds(0, 3600)       # waiting for another pcimgr's lock
VLAN = Digits(1, 4094)                # a guest interface's VLAN tag
VF_VLAN = Digits(0, 4094)             # a VF's port VLAN; 0 removes it (4095 is reserved)
QOS = Digits(0, 7)                    # 802.1p priority
VF_COUNT = Digits(0, 0xFFFF)          # sriov_numvfs
VF_INDEX = Digits(0, 0xFFFF)          # virtfnN


def checked(rule: click.ParamType, value: Any, name: str) -> Any:
    """value converted by the CLI's rule for it, for callers without click (the fleet layer):
    BadInput naming the argument, as the command line names its option."""
    try:
        return rule.convert(value, None, None)
    except click.BadParameter as e:
        raise BadInput(f"{name}: {e.message.rstrip('.')}; correct {name}") from None
