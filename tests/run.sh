#!/usr/bin/env bash
# The test command (README, .ci/run): builds xcap twice, a release build and an
# AddressSanitizer + UndefinedBehaviorSanitizer build, and runs the whole ctest suite on each;
# then runs every libFuzzer target for a minute (XCAP_FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

run_suite() {
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j "$jobs" >/dev/null
    # A failing test is run once more before it counts: the headless-Chromium check of
    # `xcap attend`'s page depends on the browser's paint timing on a loaded machine. A test
    # that fails twice fails the suite; a retry that passes still shows in the log.
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" --repeat until-pass:2
}

echo "== release build =="
run_suite build -DCMAKE_BUILD_TYPE=Release
echo "== ASan + UBSan build =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DXCAP_SANITIZE=ON
echo "== fuzz smoke: each libFuzzer target for ${XCAP_FUZZ_SECONDS:=60} s =="
# Needs clang with libFuzzer (Debian: clang libclang-rt-14-dev libomp-14-dev); CI installs it and
# must not skip. Two targets at a time; the runs are logged outside the tree (the committed
# tests/fuzz/campaign.log is for the long campaigns).
if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    if [ -n "${CI:-}" ]; then
        echo "fuzz smoke: clang with libFuzzer is missing in CI" >&2
        exit 1
    fi
    echo "fuzz smoke: skipped (no clang with libFuzzer)"
    exit 0
fi
export XCAP_FUZZ_LOG=${XCAP_FUZZ_LOG:-$(mktemp /tmp/xcap_fuzz_log.XXXXXX)}
targets=()
for src in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
bash tests/fuzz/run.sh 1 "${targets[@]}" >/dev/null 2>&1 || true # builds every target once
status=0
half=$(((${#targets[@]} + 1) / 2))
bash tests/fuzz/run.sh "$XCAP_FUZZ_SECONDS" "${targets[@]:0:$half}" >/tmp/xcap_fuzz_a.out 2>&1 &
lane=$!
bash tests/fuzz/run.sh "$XCAP_FUZZ_SECONDS" "${targets[@]:$half}" >/tmp/xcap_fuzz_b.out 2>&1 || status=1
wait $lane || status=1
grep -h "^fuzz_" /tmp/xcap_fuzz_a.out /tmp/xcap_fuzz_b.out
[ $status -eq 0 ] || { echo "fuzz smoke: a target failed (see the logs above)" >&2; exit 1; }
