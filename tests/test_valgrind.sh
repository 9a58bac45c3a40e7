#!/usr/bin/env bash
# valgrind memcheck over the tool's main paths on the tiny model: caption (greedy, beams, n-best,
# attention maps through attend), batch (JSONL and sidecars, with a bad file among good ones) and
# quantize. Zero errors and no definite or indirect leaks. (The OpenMP runtime keeps its thread
# pool alive to the end; those stacks show as "possibly lost" and are not counted.)
# Usage: test_valgrind.sh PATH/TO/xcap
set -u
XCAP=$1
MODEL=tests/fixtures/models/tiny
if ! command -v valgrind >/dev/null; then
    if [ -n "${CI:-}" ]; then echo "test_valgrind: valgrind missing in CI" >&2; exit 1; fi
    echo "test_valgrind: valgrind not installed, skipped (.ci/run installs it)"
    exit 0
fi
if ldd "$XCAP" 2>/dev/null | grep -q libasan; then
    echo "test_valgrind: skipped for a sanitizer build (AddressSanitizer and valgrind exclude each other)"
    exit 0
fi
TMP=$(mktemp -d /tmp/xcap_vg.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/shell_harness.sh"
VG=(valgrind -q --error-exitcode=99 --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite,indirect)

mkdir -p "$TMP/set"
cp tests/fixtures/images/{circles_200x150,gradient_32x32,noise_17x23}.png "$TMP/set/"
printf 'not an image' >"$TMP/set/broken.png"
IMG=tests/fixtures/images/circles_200x150.png

run "caption greedy" 0 "${VG[@]}" "$XCAP" caption -m "$MODEL" "$IMG"
run "caption beams + n-best" 0 "${VG[@]}" "$XCAP" caption -m "$MODEL" --beams 3 --n-best 2 --json "$IMG"
run "caption sampling" 0 "${VG[@]}" "$XCAP" caption -m "$MODEL" --sample --top-k 5 --seed 3 "$IMG"
run "caption bad image" 1 "${VG[@]}" "$XCAP" caption -m "$MODEL" "$TMP/set/broken.png"
run "attend" 0 "${VG[@]}" "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/maps"
run "batch jsonl" 1 "${VG[@]}" "$XCAP" batch -m "$MODEL" -q --batch-size 2 -o "$TMP/out.jsonl" "$TMP/set"
run "batch sidecars" 1 "${VG[@]}" "$XCAP" batch -m "$MODEL" -q -j 2 --format txt --out-dir "$TMP/txt" "$TMP/set"
run "quantize q8" 0 "${VG[@]}" "$XCAP" quantize "$MODEL" "$TMP/q8" --type q8
run "caption q8" 0 "${VG[@]}" "$XCAP" caption -m "$TMP/q8" "$IMG"

finish test_valgrind
