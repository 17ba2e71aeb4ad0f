"""Start-up cost of a large blacklist file: the configuration check parses it, the filters are built from it.

    python scripts/bench/filter_lists.py --numbers 1000000

Writes a blacklist of `--numbers` distinct numbers, then times `load_config` (which checks every line
of the file, and keeps what it parsed) and `FiltersSection.build` (which takes that over when the file
has not changed). Prints: load_config_s=… build_s=…
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from smsgw.config import load_config
from smsgw.validation import Router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-lists-") as tmp:
        numbers = Path(tmp) / "optout.txt"
        numbers.write_text("".join(f"139{i:08d}\n" for i in range(args.numbers)), encoding="utf-8")
        config = Path(tmp) / "smsgw.yaml"
        config.write_text(f"api: {{enabled: false}}\nfilters:\n  blacklist:\n    - {{name: opt-out, file: {numbers}}}\n",
                          encoding="utf-8")
        t0 = time.perf_counter()
        loaded = load_config(str(config), {})
        t1 = time.perf_counter()
        loaded.filters.build(Router([], "x"))
        t2 = time.perf_counter()
    print(f"load_config_s={t1 - t0:.2f} build_s={t2 - t1:.2f}")


if __name__ == "__main__":
    main()
