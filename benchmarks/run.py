"""Run every `benchmarks/bench_*.py` module's `main()` in turn (or the ones named on the command line).

The default set (``make bench``) leaves out :data:`ON_THEIR_OWN`: each runs when named, or by its
own make target.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks

#: Benchmarks too long for the default set: the prediction log at 10 million rows (``make bench-predlog``).
ON_THEIR_OWN = {"bench_predlog"}


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))


def select(names: list[str]) -> list[str]:
    """The modules named (``data`` or ``bench_data``); with no names, the default set."""
    if names:
        return [m for m in modules() if m.removeprefix("bench_") in names or m in names]
    return [m for m in modules() if m not in ON_THEIR_OWN]


def main(names: list[str]) -> int:
    selected = select(names)
    if not selected:
        print(f"no benchmark matches {names}; available: {', '.join(modules())}")
        return 2
    for name in selected:
        print(f"\n=== {name}")
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name} took {time.perf_counter() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
