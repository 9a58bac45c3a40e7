#!/usr/bin/env bash
# Builds (when needed) and runs xcap's libFuzzer targets, each for SECONDS, one after another.
#
#   tests/fuzz/run.sh SECONDS [TARGET...]      (default: every tests/fuzz/fuzz_*.c)
#
# Needs clang with libFuzzer (Debian 12: clang-14 and libclang-rt-14-dev; also libomp-14-dev).
# The build goes to build-fuzz/ (XCAP_FUZZ_BUILD overrides), configured with XCAP_FUZZ=ON.
# Each target starts from its committed seeds (tests/fuzz/corpus/TARGET) plus what earlier runs
# found (BUILD/corpus/TARGET, where new inputs are written); crashing inputs land in
# BUILD/crashes/TARGET/. Every run appends one line to tests/fuzz/campaign.log:
#   UTC-date  target  seconds-run  execs  result
# and the totals per target over the whole log are printed at the end.
# Runs under nice with one job and one OpenMP thread, so it can share the machine.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${XCAP_FUZZ_BUILD:-$root/build-fuzz}
log=${XCAP_FUZZ_LOG:-$root/tests/fuzz/campaign.log} # the test command logs elsewhere

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
    echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for src in "$root"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
fi
for t in "${targets[@]}"; do
    if [ ! -f "$root/tests/fuzz/$t.c" ]; then
        echo "run.sh: no fuzz target $t (tests/fuzz/$t.c)" >&2
        exit 2
    fi
done

if [ ! -f "$build/CMakeCache.txt" ]; then
    nice -n 19 cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DXCAP_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
fi
nice -n 19 cmake --build "$build" -j1 --target "${targets[@]}" >/dev/null || {
    echo "run.sh: build failed (cmake --build $build --target ${targets[*]})" >&2
    exit 1
}

# Per-target options: dictionaries, and room for larger images.
options_for() {
    case $1 in
    fuzz_image) echo "-dict=$root/tests/fuzz/dict/image.dict -max_len=32768" ;;
    fuzz_config | fuzz_safetensors) echo "-dict=$root/tests/fuzz/dict/json.dict" ;;
    fuzz_tokenizer_load) echo "-dict=$root/tests/fuzz/dict/json.dict -max_len=16384" ;;
    *) echo "" ;;
    esac
}

status=0
for t in "${targets[@]}"; do
    work=$build/corpus/$t crashes=$build/crashes/$t
    mkdir -p "$work" "$crashes"
    out=$build/$t.$$.log # one file per run: two lanes may run the same target at once
    start=$(date +%s)
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 nice -n 19 "$build/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 \
        -print_final_stats=1 -artifact_prefix="$crashes/" $(options_for "$t") \
        "$work" "$root/tests/fuzz/corpus/$t" >"$out" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start)) # shorter than asked when the target crashed
    execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' | tail -1)
    if [ -z "$execs" ]; then # killed before the final stats: take the last progress line
        execs=$(grep -ao '^#[0-9]*' "$out" | tail -1 | tr -d '#')
    fi
    result=ok
    if [ $rc -ne 0 ]; then
        artifact=$(grep -ao "Test unit written to [^ ]*" "$out" | tail -1 | sed 's/Test unit written to //')
        result="crash:${artifact:-exit-$rc}"
        status=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$t" "$elapsed" "${execs:-0}" "$result" >>"$log"
    printf '%-22s %6ss %12s execs  %s  (log: %s)\n' "$t" "$elapsed" "${execs:-0}" "$result" "$out"
done

echo "totals in $log:"
awk -F'\t' '!/^#/ && NF >= 5 { s[$2] += $3; e[$2] += $4; if ($5 != "ok") c[$2]++ }
    END { for (t in s) printf "  %-22s %8d s %14d execs  %d failed runs\n", t, s[t], e[t], c[t] }' "$log" | sort
exit $status
