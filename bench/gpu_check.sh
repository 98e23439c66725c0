#!/usr/bin/env bash
# One short GPU run with every performance figure (see bench/README.md, "GPU check").
#
#   bench/gpu_check.sh --prepare              # here, once: download the wheels the device lacks into .whl/
#   bench/gpu_check.sh                        # on the device (carry .whl): results into $OUT
#   bench/gpu_check.sh --cpu-dry-run OUTDIR   # anywhere: the same parts at toy sizes on the CPU (CI runs it)
#
# Extra arguments go to bench/gpu_check.py (e.g. --only e2e_14b,decode, --budget-s 300).
set -euo pipefail
cd "$(dirname "$0")/.."

# Not on the device image (KINDS.md's package list), pinned to what the project is tested with here.
WHEELS=(diffusers==0.42.1 importlib_metadata==8.7.0 plyfile==1.1.5 gsplat==1.5.3)

case "${1:-}" in
  --prepare)
    PY=${PYTHON:-python3}
    mkdir -p .whl
    # The device runs CPython 3.12 on x86-64 Linux; --no-deps: everything else is already there.
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "${WHEELS[@]}"
    ls -la .whl
    exit 0 ;;
  --cpu-dry-run)
    [ -n "${2:-}" ] || { echo "usage: bench/gpu_check.sh --cpu-dry-run OUTDIR" >&2; exit 2; }
    out=$2; shift 2
    PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    exec "$PY" bench/gpu_check.py --cpu-dry-run --out "$out" "$@" ;;
  -h|--help)
    sed -n 2,8p "$0"; exit 0 ;;
esac

# On the device: install the carried wheels next to the image's packages, then run every part.
out=${OUT:-bench/results/gpu_check}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no wheels in .whl/ (run bench/gpu_check.sh --prepare here and carry .whl); using what is installed" >&2
fi
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1
exec python3 bench/gpu_check.py --out "$out" "$@"
