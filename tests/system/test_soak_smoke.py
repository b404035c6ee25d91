"""`bench/soak.py --quick` as a test: a hot-swap, corrupt versions, abandoned requests and a SIGTERM restart
while 16 clients stream requests; no failed request, no wrong answer, no accepted request lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "new version served",
    "status reports the corrupt version 3",
    "version 2 keeps serving",
    "server unaffected by abandoned requests",
    "SIGTERM: clean exit",
    "every request accepted before SIGTERM completed",
    "no failed request",
    "no wrong answer",
)


def test_quick_soak_passes_every_check(mnist_model_dir):
    data_dir = os.environ.get("DIGITS_DATA_DIR") or str(REPO_ROOT / "data")
    argv = [
        sys.executable,
        str(REPO_ROOT / "bench" / "soak.py"),
        "--quick",
        "--model-base",
        str(mnist_model_dir),
        "--data-dir",
        data_dir,
        # A test must not be a stopwatch on a shared machine: it checks that the new version is
        # picked up without a restart; how fast is bench/soak.py's business on a quiet machine.
        "--swap-slack",
        "5",
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    report = run.stdout + "\n" + run.stderr[-3000:]
    assert run.returncode == 0, report
    assert "PASS" in run.stdout, report
    for check in CHECKS:
        assert f"[ok] {check}" in run.stdout, report
