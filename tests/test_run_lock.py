"""One training per run directory: a second one is refused while the first runs; a killed
holder never leaves the directory locked."""

import os
import signal
import subprocess
import sys

from cli_helpers import run_cli

SYNTHETIC = "synthetic:32x32:4:96"
HOLD = """
import sys, time
from pathlib import Path
from resnets.train.rundir import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_training_is_refused_while_the_first_holds_the_directory(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = run_cli("train", "resnet20", "--data", SYNTHETIC, "--iterations", "2", "--batch-size", "16",
                          "--val-size", "32", "--out", str(run_dir))
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and "is in use by another training process" in refused.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written beside the holder's
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the dead holder's lock: the same command now trains
    done = run_cli("train", "resnet20", "--data", SYNTHETIC, "--iterations", "2", "--batch-size", "16",
                   "--val-size", "32", "--out", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert (run_dir / "config.json").is_file() and (run_dir / "last.json").is_file()
