"""What it costs to start: ``import resnets.cli`` and ``resnets --help`` against ``import torch``
(the floor: every command needs torch) and ``import torchvision`` (what a user of its ResNets
pays), each in a fresh interpreter, interleaved over rounds; medians.

    python benchmarks/import_time.py                 # 7 rounds
    python benchmarks/import_time.py --rounds 15

Target: ``import resnets.cli`` at most 1.3x ``import torch``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    "import torch (baseline)": [sys.executable, "-c", "import torch"],
    "import torchvision (peer)": [sys.executable, "-c", "import torchvision"],
    "import resnets": [sys.executable, "-c", "import resnets"],
    "import resnets.cli": [sys.executable, "-c", "import resnets.cli"],
    "resnets --help": [sys.executable, "-m", "resnets", "--help"],
    "resnets train --help": [sys.executable, "-m", "resnets", "train", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, command in CASES.items():  # interleaved: a change in load hits every case alike
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["import torch (baseline)"])
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':<28} {'median s':>9} {'x torch':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<28} {median:>9.3f} {median / base:>8.2f}")


if __name__ == "__main__":
    main()
