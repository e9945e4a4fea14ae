"""pcimgr's table output is tabulate's "plain" format, written out (issue 29: tabulate's
import was a tenth of `list`): for any headers and cells, the same text as tabulate
prints, which stays a test dependency for this comparison."""

from __future__ import annotations

import tabulate
from hypothesis import given, settings
from hypothesis import strategies as st

from pcimgr.cli import render
from pcimgr.core.terminal import safe

# names and facts as pcimgr shows them: ASCII, Latin letters, CJK (counted as characters)
TEXT = st.text(st.sampled_from("abcXYZ019 -_.:[]()/äöüé漢字한"), max_size=12)


def theirs(rows: list[list[str]], headers: list[str]) -> str:
    tabulate.PRESERVE_WHITESPACE = True
    tabulate.WIDE_CHARS_MODE = False  # what it did for pcimgr: no wcwidth in its venv
    return tabulate.tabulate([[safe(c) for c in row] for row in rows], headers=headers,
                             tablefmt="plain", disable_numparse=True)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(
    st.lists(TEXT.filter(lambda t: t.strip() == t and t), min_size=n, max_size=n),
    st.lists(st.lists(TEXT, min_size=n, max_size=n), max_size=6))))
def test_the_table_is_tabulates_plain_format(table: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = table
    assert render.table(rows, headers) == theirs(rows, headers)


def test_the_list_table_of_the_demo_host(run, demo_root) -> None:
    """The widest table pcimgr prints, with VFs indented under their PF."""
    from pcimgr.cli.context import Context
    from pcimgr.drivers import safety
    from pcimgr.host import discovery, usage
    ctx = Context(str(demo_root), None, 30.0, None)
    host = discovery.scan(ctx.sysfs)
    survey = usage.survey(ctx.machine, deep=False)
    rows = render.list_rows(list(host.devices), ctx.namer,
                            lambda d: safety.host_use(ctx.sysfs, d, survey), None,
                            render.NAME_WIDTH, False, frozenset())
    headers = render.list_headers(False, False)
    assert render.table(rows, headers) == theirs(rows, headers)
