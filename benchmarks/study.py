"""Data-efficiency study: mean Dice ± std against the number of annotated slices.

The same code as ``xrayseg study``; this script adds the machine and timing header
used in ``docs/study.md``.

    python benchmarks/study.py --out study-out                         # defaults of xrayseg study
    python benchmarks/study.py --out s --slices 1 2 4 8 16 --repeats 2 --minutes 0.75
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time

import torch

from napari_xrayseg.cli import main as cli_main


def main() -> int:
    argv = ["study", *sys.argv[1:]]
    print(f"# python benchmarks/study.py {shlex.join(sys.argv[1:])}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    )
    t0 = time.perf_counter()
    rc = cli_main(argv)
    print(f"# total {time.perf_counter() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
