"""The table both lab benchmarks print: median seconds of each way, relative to pcimgr's."""

from __future__ import annotations

import statistics


def print_table(times: dict[str, list[float]], base: str, what: str, width: int) -> None:
    reference = statistics.median(times[base])
    print(f"{'way':<{width}}{'median s':>9}{'vs pcimgr':>11}   ({what})")
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:<{width}}{m:>9.2f}{m / reference:>10.2f}x")
