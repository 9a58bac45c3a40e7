# Shared helpers for the shell tests (sourced). Counts checks in $passed / $failed; `run` keeps
# a command's stdout and stderr in $TMP/out and $TMP/err (the test sets TMP first).
passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
# run NAME EXPECTED_CODE CMD...
run() {
    local name=$1 want=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else fail "$name: exit $got, expected $want; stderr: $(head -c 400 "$TMP/err")"; fi
}
expect_out() { if grep -q -- "$2" "$TMP/out"; then ok; else fail "$1: stdout lacks '$2': $(head -c 400 "$TMP/out")"; fi; }
expect_err() { if grep -q -- "$2" "$TMP/err"; then ok; else fail "$1: stderr lacks '$2': $(head -c 400 "$TMP/err")"; fi; }
# finish NAME: prints the counts; the exit status says whether everything passed.
finish() {
    echo "$1: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
