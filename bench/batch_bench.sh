#!/usr/bin/env bash
# Throughput of `xcap batch` against one `xcap caption` process per file, at 1 and 2 threads,
# and of batch mode's grouping (--batch-size 1: one image per encoder pass and decoder step).
# Not a test (speed has no place in ctest); prints a table and whether batch mode saved more
# than the model loads it avoided.
#
#   bench/batch_bench.sh [-x build/xcap] [-m MODEL_DIR] [-n 200] [-i IMAGE_DIR]
#
# Without -i, renders N scenes of the training world (weights/world, needs /usr/bin/python3
# with PIL) into a temporary folder, so that the default model sees the kind of picture it was
# trained on. Any model directory works; say which one when you quote the numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
XCAP=build/xcap
MODEL=${XCAP_MODEL:-weights/default}
N=200
IMAGES=
while getopts "x:m:n:i:" opt; do
    case $opt in
    x) XCAP=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    n) N=$OPTARG ;;
    i) IMAGES=$OPTARG ;;
    *) sed -n '2,11p' "$0" >&2 && exit 2 ;;
    esac
done
TMP=$(mktemp -d /tmp/xcap_bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [ -z "$IMAGES" ]; then
    IMAGES=$TMP/scenes
    mkdir -p "$IMAGES"
    /usr/bin/python3 - "$IMAGES" "$N" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "weights", "world"))
from PIL import Image
from world import World
out, n = sys.argv[1], int(sys.argv[2])
world = World()
for i in range(n):  # seed 7, as the examples: neither the training nor the validation stream
    Image.fromarray(world.render(world.scene(7, 1000 + i, "train"))).save(os.path.join(out, "scene_%04d.png" % i))
PY
fi
mapfile -d '' FILES < <(find "$IMAGES" -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) -print0 | sort -z | head -z -n "$N")
n=${#FILES[@]}
[ "$n" -gt 0 ] || { echo "no images in $IMAGES" >&2; exit 2; }
mkdir -p "$TMP/one"
ln -s "$(realpath "${FILES[0]}")" "$TMP/one/"
mkdir -p "$TMP/set"
for f in "${FILES[@]}"; do ln -s "$(realpath "$f")" "$TMP/set/"; done

seconds() { # CMD...: wall seconds of one run
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
per_file() { for f in "${FILES[@]}"; do "$XCAP" caption -m "$MODEL" -t "$1" "$f"; done; }

mkdir -p "$TMP/empty"
load=$("$XCAP" batch -m "$MODEL" "$TMP/empty" 2>&1 | sed -n 's/.*model loaded in \([0-9.]*\) s.*/\1/p')
one=$(seconds "$XCAP" caption -m "$MODEL" -t 1 "${FILES[0]}")
echo "model: $MODEL ($(du -shL "$MODEL" | cut -f1)); $n images from $IMAGES; $(nproc) cores; load $(uptime | sed 's/.*load average: //')"
echo "model load (batch summary): ${load:-?} s; one 'xcap caption' process on one image: $(printf %.3f "$one") s"
printf '%-44s %8s %10s\n' mode seconds images/s
calc() { awk "BEGIN { print $1 }"; }
row() { printf '%-44s %8.2f %10.2f\n' "$1" "$2" "$(calc "$n / $2")"; }
declare -A T
for t in 1 2; do
    T[file$t]=$(seconds per_file "$t")
    row "xcap caption once per file, --threads $t" "${T[file$t]}"
    T[batch$t]=$(seconds "$XCAP" batch -m "$MODEL" -q --overwrite -t "$t" -o "$TMP/out.jsonl" "$TMP/set")
    row "xcap batch, --threads $t" "${T[batch$t]}"
done
for b in 1 16; do
    T[bs$b]=$(seconds "$XCAP" batch -m "$MODEL" -q --overwrite -t 1 --decode-threads 2 --batch-size "$b" -o "$TMP/out.jsonl" "$TMP/set")
    row "xcap batch, --threads 1 --batch-size $b" "${T[bs$b]}"
done
T[jobs2]=$(seconds "$XCAP" batch -m "$MODEL" -q --overwrite -j 2 -o "$TMP/out.jsonl" "$TMP/set")
row "xcap batch, --jobs 2 (1 thread each)" "${T[jobs2]}"
T[dec2]=$(seconds "$XCAP" batch -m "$MODEL" -q --overwrite -t 1 --decode-threads 2 -o "$TMP/out.jsonl" "$TMP/set")
row "xcap batch, --threads 1 --decode-threads 2" "${T[dec2]}"
for t in 1 2; do
    saved=$(calc "${T[file$t]} - ${T[batch$t]}")
    loads=$(calc "($n - 1) * ${load:-0}")
    verdict=no
    [ "$(calc "($saved > $loads) ? 1 : 0")" = 1 ] && verdict=yes
    printf -- '--threads %s: batch saved %.2f s; the %d model loads it avoided cost %.2f s; saved more: %s\n' \
        "$t" "$saved" "$((n - 1))" "$loads" "$verdict"
done
