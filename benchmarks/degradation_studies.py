"""The studies behind docs/studies and the degradation and gradient figures of docs/studies.md, run
again with the commands that made them: quick budget with the paper's recipe and with the
warm-up recipe, the long budget, the gradient study on the quick warm-up study's snapshots
and the layer responses of the long study. Plain nets are the residual nets' baseline in the
same run. Each study resumes where it stopped; finished runs are read back, not retrained.

    python benchmarks/degradation_studies.py --data ../shared/datasets/cifar10-jpeg-train.zip
    python benchmarks/degradation_studies.py --only quick quick-warmup --dry-run
"""

from __future__ import annotations

import argparse
import subprocess
import sys

MODELS = ["--models", "plain20", "resnet20", "plain56", "resnet56"]


def commands(data: str, out: str) -> dict[str, list[str]]:
    degradation = ["study", "degradation", "--data", data, *MODELS]
    return {
        "quick": [*degradation, "--budget", "quick", "--recipe", "paper-cifar", "--out", f"{out}/degradation-quick"],
        "quick-warmup": [*degradation, "--budget", "quick", "--recipe", "paper-cifar-warmup",
                         "--out", f"{out}/degradation-quick-warmup"],
        "long-warmup": [*degradation, "--budget", "long", "--recipe", "paper-cifar-warmup",
                        "--out", f"{out}/degradation-long-warmup"],
        "gradients-training": ["study", "gradients", "--depths", "20", "56", "--data", data, "--trained-from",
                               f"{out}/degradation-quick-warmup", "--out", f"{out}/gradients-training"],
        "responses": ["study", "responses", "--from", f"{out}/degradation-long-warmup", "--out", f"{out}/responses"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10-jpeg-train.zip")
    parser.add_argument("--out", default="runs/studies", help="where the study directories go")
    parser.add_argument("--only", nargs="+", help="which studies, in this order (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    every = commands(args.data, args.out)
    names = args.only or list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        parser.error(f"--only: unknown study {', '.join(unknown)}; choose from {', '.join(every)}")
    for name in names:
        command = [sys.executable, "-m", "resnets", *every[name]]
        print("$ resnets " + " ".join(every[name]), flush=True)
        if not args.dry_run and subprocess.run(command).returncode != 0:
            print(f"{name} failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
