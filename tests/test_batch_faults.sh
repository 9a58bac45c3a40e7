#!/usr/bin/env bash
# xcap batch when things go wrong mid-run: SIGINT / SIGTERM (the record in hand finished, a
# summary, exit 130 / 143, a rerun completes the same records), output on a full disk or past a
# file-size limit (an error naming the output, exit 1, the file cut back to whole records), a
# sidecar folder that cannot be created, an input deleted while the run goes on, and paths with
# ".." that must not put a sidecar outside --out-dir. Usage: test_batch_faults.sh PATH/TO/xcap
set -u
XCAP=$1
MODEL=tests/fixtures/models/tiny
TMP=$(mktemp -d /tmp/xcap_faults.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/shell_harness.sh"
B=("$XCAP" batch -m "$MODEL")

# whole_lines FILE N: FILE holds exactly N lines, each complete JSON ending in a newline.
whole_lines() {
    local n
    n=$(wc -l <"$1")
    if [ "$n" -ne "$2" ]; then fail "$1: $n lines, expected $2"; return; fi
    if [ -s "$1" ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" != '\n' ]; then fail "$1: last line cut"; return; fi
    while IFS= read -r line; do
        case $line in '{"path":'*'}') ;; *) fail "$1: broken record: ${line:0:80}"; return ;; esac
    done <"$1"
    ok
}

TREE=$TMP/tree
mkdir -p "$TREE/a" "$TREE/b"
i=0
for f in tests/fixtures/images/*.png; do
    i=$((i + 1))
    cp "$f" "$TREE/$([ $((i % 2)) -eq 0 ] && echo a || echo b)/img_$(printf %02d $i).png"
done
N=$(find "$TREE" -name '*.png' | wc -l)
run "baseline" 0 "${B[@]}" -q -o "$TMP/base.jsonl" "$TREE"
whole_lines "$TMP/base.jsonl" "$N"

# --- signals: stop after the record in hand, summary, 128 + signal; a rerun completes ---
for sig in INT TERM; do
    want=$([ $sig = INT ] && echo 130 || echo 143)
    num=$([ $sig = INT ] && echo 2 || echo 15)
    rm -f "$TMP/sig.jsonl"
    XCAP_TEST_SIGNAL=$num XCAP_TEST_SIGNAL_AFTER=3 run "SIG$sig stops the run" "$want" "${B[@]}" -o "$TMP/sig.jsonl" "$TREE"
    expect_err "SIG$sig reported" "interrupted by SIG$sig after 3 of $N images"
    expect_err "SIG$sig summary" "3 captioned"
    whole_lines "$TMP/sig.jsonl" 3
    run "after SIG$sig, the same command resumes" 0 "${B[@]}" -q -o "$TMP/sig.jsonl" "$TREE"
    cmp -s "$TMP/sig.jsonl" "$TMP/base.jsonl" && ok || fail "SIG$sig + resume differs from one run"
done
# --quiet still says why it stopped
rm -f "$TMP/sig.jsonl"
XCAP_TEST_SIGNAL_AFTER=1 run "SIGINT with --quiet" 130 "${B[@]}" -q -o "$TMP/sig.jsonl" "$TREE"
expect_err "SIGINT with --quiet reported" "interrupted by SIGINT"

# --- output that cannot be written ---
run "-o /dev/full" 1 "${B[@]}" -q -o /dev/full "$TREE"
expect_err "-o /dev/full named" "cannot write /dev/full: No space left on device"
run "stdout on /dev/full" 1 bash -c '"$@" >/dev/full' _ "${B[@]}" -q "$TREE"
expect_err "stdout on /dev/full named" "cannot write standard output: No space left on device"
# A file-size limit (in KiB) that falls inside a record: the file ends on a whole record.
rm -f "$TMP/limit.jsonl"
run "ulimit -f" 1 bash -c 'ulimit -f 2; exec "$@"' _ "${B[@]}" -q -o "$TMP/limit.jsonl" "$TREE"
expect_err "ulimit -f named" "cannot write $TMP/limit.jsonl: File too large"
kept=$(wc -l <"$TMP/limit.jsonl")
[ "$kept" -gt 0 ] && [ "$kept" -lt "$N" ] && ok || fail "ulimit -f: $kept records kept"
whole_lines "$TMP/limit.jsonl" "$kept"
[ "$(stat -c %s "$TMP/limit.jsonl")" -le 2048 ] && ok || fail "ulimit -f: file past the limit"
run "resume after the limit" 0 "${B[@]}" -q -o "$TMP/limit.jsonl" "$TREE"
cmp -s "$TMP/limit.jsonl" "$TMP/base.jsonl" && ok || fail "limit + resume differs from one run"

# --- sidecars that cannot be written: the folder is refused before any work ---
echo "not a folder" >"$TMP/file"
run "--out-dir under a file" 1 "${B[@]}" -q --format txt --out-dir "$TMP/file/out" "$TREE"
expect_err "--out-dir failure named" "cannot create $TMP/file/out: Not a directory"
if [ "$(id -u)" -ne 0 ]; then # root writes through permission bits
    mkdir -p "$TMP/ro" && chmod 555 "$TMP/ro"
    run "read-only --out-dir" 1 "${B[@]}" -q --format txt --out-dir "$TMP/ro" "$TREE"
    [ -z "$(find "$TMP/ro" -type f)" ] && ok || fail "files written into a read-only folder"
    chmod 755 "$TMP/ro"
fi

# --- an input deleted while the run goes on: its error record, everything else captioned ---
# Large images decode slowly (~tens of ms each) and decoding works at most a few images ahead of
# the records written, so an image near the end is still on disk when the run starts and gone
# when its turn comes.
SLOW=$TMP/slow
mkdir -p "$SLOW"
/usr/bin/python3 - "$SLOW" <<'PYEOF'
import struct, sys, zlib
def png(path, w, h, rgb):
    row = b'\0' + bytes(rgb) * w
    raw = zlib.compress(row * h, 9)
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
                           + chunk(b'IDAT', raw) + chunk(b'IEND', b''))
for i in range(24):
    png('%s/s_%02d.png' % (sys.argv[1], i), 3000, 3000, (i * 10, 100, 200))
PYEOF
"${B[@]}" -q --batch-size 1 -o "$TMP/slow.jsonl" "$SLOW" >/dev/null 2>"$TMP/slow.err" &
pid=$!
for _ in $(seq 1 500); do
    [ -s "$TMP/slow.jsonl" ] && break
    sleep 0.01
done
rm -f "$SLOW/s_20.png"
wait $pid
code=$?
[ "$code" -eq 1 ] && ok || fail "deleted input: exit $code, expected 1"
whole_lines "$TMP/slow.jsonl" 24
grep -q '"path":"'"$SLOW"'/s_20.png".*"error":".*No such file or directory' "$TMP/slow.jsonl" && ok ||
    fail "deleted input: no error record for s_20.png"
[ "$(grep -c '"caption"' "$TMP/slow.jsonl")" -eq 23 ] && ok || fail "deleted input: the others were not all captioned"

# --- --max-pixels: larger images get an error record from their header, the rest go on ---
run "--max-pixels" 1 "${B[@]}" -q --max-pixels 2000 -o "$TMP/px.jsonl" "$TREE"
big=$(grep -c '"error":".*larger than xcap accepts' "$TMP/px.jsonl")
small=$(grep -c '"caption"' "$TMP/px.jsonl")
[ "$big" -gt 0 ] && [ "$small" -gt 0 ] && [ $((big + small)) -eq "$N" ] && ok ||
    fail "--max-pixels: $big refused, $small captioned of $N"

# --- ".." in the paths given: sidecars stay under --out-dir, mirroring the relative paths ---
run "dotdot roots" 0 "${B[@]}" -q --format txt --out-dir "$TMP/side" "$TREE/a/../b" "$TREE/b/../a/img_02.png"
outside=$(find "$TMP" -name '*.txt' -not -path "$TMP/side/*" | wc -l)
[ "$outside" -eq 0 ] && ok || fail "$outside sidecars outside --out-dir"
[ "$(find "$TMP/side" -name '*.txt' | wc -l)" -eq "$(($(ls "$TREE/b" | wc -l) + 1))" ] && ok ||
    fail "dotdot: sidecars missing under --out-dir"
[ -z "$(find "$TMP/side" -path '*..*')" ] && ok || fail "dotdot: a '..' folder under --out-dir"

finish test_batch_faults
