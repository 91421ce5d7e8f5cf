"""The AArch64 NEON kernels, cross-compiled and run under qemu-user.

The kernels test (cpp/pylocalize/hamming/kernels_test.cc) checks every kernel a CPU
supports against a naive reference. On x86-64 machines the NEON path can only run
emulated: this builds the test for AArch64 with Debian's g++-aarch64-linux-gnu and runs it
with qemu-aarch64 (.ci/run installs both; the test skips where they are missing).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    "cpp/pylocalize/util/cpu.cc",
    "cpp/pylocalize/hamming/kernels.cc",
    "cpp/pylocalize/hamming/kernels_scalar.cc",
    "cpp/pylocalize/hamming/kernels_neon.cc",
    "cpp/pylocalize/hamming/kernels_test.cc",
    "cpp/pylocalize/knn/kernels.cc",
    "cpp/pylocalize/knn/kernels_scalar.cc",
    "cpp/pylocalize/knn/kernels_neon.cc",
]
CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


@pytest.mark.skipif(CXX is None or QEMU is None or not (ROOT / "cpp").is_dir(),
                    reason="needs g++-aarch64-linux-gnu and qemu-user (apt) and the source tree")
def test_neon_kernels_match_reference(tmp_path):
    exe = tmp_path / "kernels_test_aarch64"
    build = subprocess.run(
        [CXX, "-std=c++17", "-O2", "-static", "-Wall", "-Werror", "-Wno-unused-parameter",
         f"-I{ROOT / 'cpp'}", *[str(ROOT / s) for s in SOURCES], "-o", str(exe)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "neon     ok" in run.stdout and "scalar   ok" in run.stdout
