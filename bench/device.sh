#!/usr/bin/env bash
# The GPU check on a lent device machine (no network; python3 3.12 with torch 2.11, torchvision,
# timm, numba, opencv, pillow, psutil, tqdm, matplotlib, pytest; no simplejpeg, DALI, FFCV or
# TorchCodec). Run from the repository root as the device command (docs/maintainers.md):
#
#   bash bench/device.sh core             # the core plan in one call: needs nothing carried
#   bash bench/device.sh receive          # keep the carried DALI wheel part(s), install once all are there
#   bash bench/device.sh extra            # the extra plan (DALI, FFCV), once received
#
# Optional wheels in .whl/ (carry .whl; e.g. simplejpeg, `make device-core-wheels`) are installed
# first. `make device-wheels` (on a machine with PyPI) packs DALI and TorchCodec into one tar split
# in parts of at most 55 MiB under .whl-parts/ (a call carries at most 64 MiB): carry
# .whl-parts/MANIFEST and one part per call, in calls that follow each other while the machine is
# warm (parts are kept in /tmp between calls). Results: bench/results/<machine>/, returned as
# $OUT/gpu-results.tgz (unpack with tar xzf ... -C bench/results) and $OUT/gpu-check.md.
set -euo pipefail
WHAT=${1:-core}
PARTS=/tmp/lowres-parts
SITE=/tmp/lowres-site
mkdir -p "$PARTS" "$SITE"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
if [ -f .whl-parts/MANIFEST ]; then
    cp .whl-parts/* "$PARTS"/
fi
if [ -f "$PARTS/MANIFEST" ] && [ ! -f "$SITE/.installed" ]; then
    missing=$(cd "$PARTS" && for p in $(awk 'NR > 1 {print $1}' MANIFEST); do [ -f "$p" ] || echo "$p"; done)
    if [ -n "$missing" ]; then
        echo "wheel parts still to carry: $missing"
    else
        tarball=$(head -1 "$PARTS/MANIFEST" | awk '{print $2}')
        (cd "$PARTS" && cat $(awk 'NR > 1 {print $1}' MANIFEST) > "$tarball" && head -1 MANIFEST | sha256sum -c -)
        mkdir -p /tmp/lowres-wheels && tar xf "$PARTS/$tarball" -C /tmp/lowres-wheels
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" /tmp/lowres-wheels/*.whl
        touch "$SITE/.installed"
        echo "installed: $(ls /tmp/lowres-wheels | tr '\n' ' ')"
    fi
fi
[ "$WHAT" = receive ] && exit 0
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
status=0
python3 -m bench.gpu_check --plan "$WHAT" "${@:2}" || status=$?
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu-results.tgz" -C bench/results .
    cp bench/results/*/gpu-check.md "$OUT"/ 2>/dev/null || true
fi
exit $status
