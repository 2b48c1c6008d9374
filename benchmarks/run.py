"""Run every `benchmarks/bench_*.py` module's `main()` in turn (or the ones named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(names: list[str]) -> int:
    modules = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    selected = [m for m in modules if not names or m.removeprefix("bench_") in names or m in names]
    if not selected:
        print(f"no benchmark matches {names}; available: {', '.join(modules)}")
        return 2
    for name in selected:
        print(f"\n=== {name}")
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name} took {time.perf_counter() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
