#!/usr/bin/env bash
# `xcap attend` and `xcap caption --attention-dir` on the tiny fixture model: attention.npy is a
# valid .npy equal to the reference's greedy cross-attention (1e-5) with rows summing to 1, the
# caption matches `xcap caption`, beam search gives one row per token, PNGs have the image's
# size, --layer/--head/--fusion choices and bad values, and bad output directories (clear
# error, non-zero exit, nothing left behind). Needs only coreutils and awk.
# Usage: test_attend.sh PATH/TO/xcap
set -u
XCAP=$1
MODEL=tests/fixtures/models/tiny
GOLDEN=tests/fixtures/goldens/tiny
TMP=$(mktemp -d /tmp/xcap_attend.XXXXXX)
trap 'chmod -R u+w "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { # NAME CMD...: passes when CMD succeeds
    local name=$1
    shift
    if "$@"; then ok; else fail "$name"; fi
}

# run NAME EXPECTED_CODE CMD... : runs, keeps stdout/stderr in $TMP/out, $TMP/err
run() {
    local name=$1 want=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else fail "$name: exit $got, expected $want; stderr: $(head -c 400 "$TMP/err")"; fi
}
expect_out() { if grep -q -- "$2" "$TMP/out"; then ok; else fail "$1: stdout lacks '$2': $(head -c 400 "$TMP/out")"; fi; }
expect_err() { if grep -qF -- "$2" "$TMP/err"; then ok; else fail "$1: stderr lacks '$2': $(head -c 400 "$TMP/err")"; fi; }
one_line_err() { if [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok; else fail "$1: stderr is not one line: $(cat "$TMP/err")"; fi; }

# --- .npy helpers (format: magic, version 1.0, little-endian u16 header length, dict, data) ---
npy_header_len() { echo $((10 + $(od -A n -t u2 -j 8 -N 2 "$1" | tr -d ' '))); }
npy_header() { head -c "$(npy_header_len "$1")" "$1" | tail -c +11; }
npy_shape() { npy_header "$1" | sed -n "s/.*'shape': (\([^)]*\)).*/\1/p" | tr -d ' ' | sed 's/,$//'; }
npy_values() { od -A n -t f4 -v -j "$(npy_header_len "$1")" "$1" | tr -s ' ' '\n' | sed '/^$/d'; }
# prints the largest |a - b| of two float32 .npy files of equal size
npy_max_diff() {
    paste <(npy_values "$1") <(npy_values "$2") |
        awk 'NF != 2 { bad = 1 } { d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { if (bad || NR == 0) print "mismatch"; else printf "%.3g\n", m }'
}
# prints the largest |row sum - 1| over rows of length N
npy_row_sum_err() {
    npy_values "$1" | awk -v n="$2" '{ s += $1; k++; if (k == n) { d = s - 1; if (d < 0) d = -d; if (d > m) m = d; s = 0; k = 0 } }
        END { if (k != 0) print "ragged"; else printf "%.3g\n", m }'
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "mismatch" && a != "ragged" && a + 0 <= b + 0) }'; }
# PNG width and height from the IHDR chunk
png_size() {
    if [ "$(head -c 8 "$1" | od -A n -t x1 | tr -d ' \n')" != "89504e470d0a1a0a" ]; then echo "not-png"; return; fi
    local w h
    w=$(od -A n -t u1 -j 16 -N 4 "$1" | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
    h=$(od -A n -t u1 -j 20 -N 4 "$1" | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
    echo "${w}x$h"
}
# "caption": "..." of a cJSON document, as escaped text
json_caption() { grep -o '"caption":[[:space:]]*"\([^"\\]\|\\.\)*"' "$1" | head -1 | sed 's/^"caption":[[:space:]]*//'; }

# --- help ---
run "attend --help" 0 "$XCAP" attend --help
for word in "usage: xcap attend" "-o, --output" --layer --head --fusion rollout "CLS" "renormalis" bilinear viridis \
    "mean of its tokens" attention.npy attention.json token_NN_WORD.png sheet.png index.html --beams "Exit codes"; do
    expect_out "attend --help mentions $word" "$word"
done
run "xcap --help lists attend" 0 "$XCAP" --help
expect_out "xcap --help lists attend" "attend IMAGE -o DIR"
run "caption --help" 0 "$XCAP" caption --help
expect_out "caption --help lists --attention-dir" "--attention-dir DIR"
expect_out "caption --help lists --fusion" "--fusion"

# --- greedy maps equal the reference's, on the three golden images ---
declare -A SIZE=([circles_200x150]=200x150 [gradient_32x32]=32x32 [rgba_40x24]=40x24)
for stem in circles_200x150 gradient_32x32 rgba_40x24; do
    img=tests/fixtures/images/$stem.png
    out=$TMP/g_$stem
    run "attend $stem" 0 "$XCAP" attend -m "$MODEL" "$img" -o "$out"
    cp "$TMP/out" "$TMP/attend_stdout"
    npy=$out/attention.npy
    check "$stem: npy magic and version 1.0" test "$(head -c 8 "$npy" | od -A n -t x1 | tr -d ' \n')" = "934e554d50590100"
    check "$stem: npy header is a multiple of 64 bytes" test $(($(npy_header_len "$npy") % 64)) -eq 0
    check "$stem: npy dtype/order" grep -q "'descr': '<f4', 'fortran_order': False" <(npy_header "$npy")
    want_shape=$(npy_shape "$GOLDEN/$stem/greedy_cross_attn.npy")
    got_shape=$(npy_shape "$npy")
    check "$stem: shape $got_shape, reference $want_shape" test "$got_shape" = "$want_shape"
    check "$stem: shape is [tokens,2,4,17]" grep -Eq '^[0-9]+,2,4,17$' <<<"$got_shape"
    n=$(tr ',' '*' <<<"$got_shape")
    check "$stem: npy data size" test "$(stat -c %s "$npy")" -eq $(($(npy_header_len "$npy") + 4 * n))
    d=$(npy_max_diff "$npy" "$GOLDEN/$stem/greedy_cross_attn.npy")
    if le "$d" 1e-5; then ok; else fail "$stem: attention.npy differs from the reference by $d"; fi
    e=$(npy_row_sum_err "$npy" 17)
    if le "$e" 1e-5; then ok; else fail "$stem: a row sums to 1 +- $e"; fi
    # the caption: printed and in attention.json, equal to xcap caption's
    run "caption $stem" 0 "$XCAP" caption -m "$MODEL" "$img"
    check "$stem: printed caption equals xcap caption's" cmp -s "$TMP/out" "$TMP/attend_stdout"
    run "caption --json $stem" 0 "$XCAP" caption -m "$MODEL" --json "$img"
    check "$stem: attention.json caption equals xcap caption's" \
        test "$(json_caption "$out/attention.json")" = "$(json_caption "$TMP/out")"
    check "$stem: attention.json shape" grep -Eq "\"shape\":[[:space:]]*\[${got_shape//,/, }\]" "$out/attention.json"
    check "$stem: attention.json axes" grep -q '"axes":[[:space:]]*\["token", "layer", "head", "memory"\]' "$out/attention.json"
    check "$stem: attention.json grid" grep -Pzq '"patch_grid":\s*\{\s*"rows":\s*4,\s*"cols":\s*4' "$out/attention.json"
    check "$stem: attention.json image size" grep -Pzq "\"image_size\":\\s*\\{\\s*\"width\":\\s*${SIZE[$stem]%x*},\\s*\"height\":\\s*${SIZE[$stem]#*x}" "$out/attention.json"
    check "$stem: attention.json model input" grep -Pzq '"model_input_size":\s*\{\s*"width":\s*32,\s*"height":\s*32' "$out/attention.json"
    check "$stem: attention.json decoding" grep -q '"num_beams":[[:space:]]*1' "$out/attention.json"
    check "$stem: attention.json drawn" grep -Pzq '"drawn":\s*\{\s*"layer":\s*"all",\s*"head":\s*"mean",\s*"fusion":\s*"none"' "$out/attention.json"
    tokens=${got_shape%%,*}
    check "$stem: one token entry per row" test "$(grep -c '"index":' <(sed -n '/"tokens":/,/"words":/p' "$out/attention.json"))" -eq "$tokens"
    # one PNG per token that belongs to a word, each at the original size
    n_png=$(grep -c '"png":' "$out/attention.json")
    check "$stem: token PNG count ($n_png)" test "$(ls "$out" | grep -c '^token_[0-9][0-9]_.*\.png$')" -eq "$n_png"
    # rgba_40x24's caption is empty (end-of-text first): no token maps, an empty page
    if [ "$stem" = rgba_40x24 ]; then want_png=0; else want_png=1; fi
    check "$stem: token PNGs ($n_png) present or not as the caption says" test $((n_png > 0)) -eq $want_png
    for png in $(ls "$out" | grep '^token_'); do
        png=$out/$png
        s=$(png_size "$png")
        if [ "$s" = "${SIZE[$stem]}" ]; then ok; else fail "$stem: $(basename "$png") is $s, expected ${SIZE[$stem]}"; fi
    done
    s=$(png_size "$out/sheet.png")
    check "$stem: sheet.png is a PNG ($s)" grep -Eq '^[0-9]+x[0-9]+$' <<<"$s"
    if [ $want_png = 1 ]; then
        check "$stem: index.html words" grep -q '<span class="word" tabindex="0"' "$out/index.html"
    else
        check "$stem: index.html empty caption" grep -q '(empty caption)' "$out/index.html"
    fi
    check "$stem: index.html is self-contained" test "$(grep -Eo '(src|href)="[^"]*' "$out/index.html" | grep -vc '="data:')" -eq 0
    check "$stem: index.html has no network address" test "$(grep -Eci 'https?://|<link|<script src' "$out/index.html")" -eq 0
    check "$stem: nothing else in the directory" test "$(ls -A "$out" | grep -Evc '^(attention\.npy|attention\.json|sheet\.png|index\.html|token_[0-9]+_[A-Za-z0-9_-]+\.png)$')" -eq 0
done

# --- beam search: one row per token of the returned beam; the caption still matches ---
IMG=tests/fixtures/images/circles_200x150.png
for opts in "--beams 4" "--beams 3 --n-best 2 --length-penalty 0.5" "--sample --seed 5 --temperature 1.5" "--max-tokens 3"; do
    # shellcheck disable=SC2086
    run "attend $opts" 0 "$XCAP" attend -m "$MODEL" $opts "$IMG" -o "$TMP/b"
    # shellcheck disable=SC2086
    run "caption $opts" 0 "$XCAP" caption -m "$MODEL" --json $opts "$IMG"
    n_tok=$(grep -o '"tokens":\[[0-9,]*\]' "$TMP/out" | head -1 | grep -o '[0-9]\+' | wc -l)
    check "$opts: rows = tokens ($n_tok)" grep -Eq "^$n_tok,2,4,17$" <<<"$(npy_shape "$TMP/b/attention.npy")"
    check "$opts: caption" test "$(json_caption "$TMP/b/attention.json")" = "$(json_caption "$TMP/out")"
    e=$(npy_row_sum_err "$TMP/b/attention.npy" 17)
    if le "$e" 1e-5; then ok; else fail "$opts: a row sums to 1 +- $e"; fi
    rm -rf "$TMP/b"
done
run "attend --beams 4 records the beams" 0 "$XCAP" attend -m "$MODEL" --beams 4 "$IMG" -o "$TMP/b"
check "beam settings in attention.json" grep -q '"num_beams":[[:space:]]*4' "$TMP/b/attention.json"
rm -rf "$TMP/b"

# --- what is drawn: choices recorded, maps change, the array does not ---
run "default" 0 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/d0"
for opts in "--layer 0" "--layer 1" "--layer last" "--layer all" "--head 0" "--head 3" "--head max" "--head mean" \
    "--fusion rollout" "--fusion none" "--layer=all --head=max --fusion=rollout" "--layer 0 --head 2 --fusion rollout"; do
    # shellcheck disable=SC2086
    run "choice $opts" 0 "$XCAP" attend -m "$MODEL" $opts "$IMG" -o "$TMP/d1"
    check "choice $opts: same array" cmp -s "$TMP/d0/attention.npy" "$TMP/d1/attention.npy"
    rm -rf "$TMP/d1"
done
run "--layer 0 --head 2 --fusion rollout" 0 "$XCAP" attend -m "$MODEL" --layer 0 --head 2 --fusion rollout "$IMG" -o "$TMP/d2"
check "choice recorded" grep -Pzq '"drawn":\s*\{\s*"layer":\s*0,\s*"head":\s*2,\s*"fusion":\s*"rollout"' "$TMP/d2/attention.json"
check "rollout draws different maps" test "$(sed -n '/"maps":/,$p' "$TMP/d0/attention.json" | md5sum)" != "$(sed -n '/"maps":/,$p' "$TMP/d2/attention.json" | md5sum)"
check "rollout draws different pictures" test "$(cat "$TMP"/d0/token_00_*.png | md5sum)" != "$(cat "$TMP"/d2/token_00_*.png | md5sum)"
run "--layer all --head max" 0 "$XCAP" attend -m "$MODEL" --layer all --head max "$IMG" -o "$TMP/d3"
check "all/max recorded" grep -Pzq '"drawn":\s*\{\s*"layer":\s*"all",\s*"head":\s*"max",\s*"fusion":\s*"none"' "$TMP/d3/attention.json"
for bad in "--layer 2" "--layer -1" "--layer x" "--layer 1.5" "--layer" "--head 4" "--head median" "--head -2" \
    "--fusion max" "--fusion" "--layer=" "--beams 0"; do
    # shellcheck disable=SC2086
    run "bad $bad" 2 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/bad" $bad
    one_line_err "bad $bad"
    check "bad $bad: nothing written" test ! -e "$TMP/bad"
done
run "bad --layer names the range" 2 "$XCAP" attend -m "$MODEL" --layer 2 "$IMG" -o "$TMP/bad"
expect_err "bad --layer names the range" "2 decoder layers"

# --- usage ---
run "no -o" 2 "$XCAP" attend -m "$MODEL" "$IMG"
expect_err "no -o" "-o DIR"
run "no image" 2 "$XCAP" attend -m "$MODEL" -o "$TMP/x"
run "two images" 2 "$XCAP" attend -m "$MODEL" "$IMG" "$IMG" -o "$TMP/x"
run "unknown option" 2 "$XCAP" attend -m "$MODEL" --frobnicate "$IMG" -o "$TMP/x"
expect_err "unknown option" "unknown option '--frobnicate'"
check "usage errors wrote nothing" test ! -e "$TMP/x"
run "--output=" 0 "$XCAP" attend -m "$MODEL" "$IMG" --output="$TMP/eq"
check "--output= wrote" test -s "$TMP/eq/attention.npy"
run "stdin" 0 "$XCAP" attend -m "$MODEL" - -o "$TMP/stdin" <"$IMG"
check "stdin: same array" cmp -s "$TMP/d0/attention.npy" "$TMP/stdin/attention.npy"
check "stdin: named <stdin>" grep -q '"image":[[:space:]]*"<stdin>"' "$TMP/stdin/attention.json"
run "--json" 0 "$XCAP" attend -m "$MODEL" --json "$IMG" -o "$TMP/js"
expect_out "--json" "\"dir\":\"$TMP/js\""
run "bad image" 1 "$XCAP" attend -m "$MODEL" "$TMP/missing.png" -o "$TMP/x"
expect_err "bad image" "$TMP/missing.png"
check "bad image wrote nothing" test ! -e "$TMP/x"
run "bad model" 3 "$XCAP" attend -m "$TMP/nowhere" "$IMG" -o "$TMP/x"
check "bad model wrote nothing" test ! -e "$TMP/x"

# --- bad output directories: one-line error naming it, exit 1, nothing left behind ---
leftovers() { find "$TMP/dirs" -name '*xcap-attend*' | wc -l; }
mkdir -p "$TMP/dirs"
echo keep >"$TMP/dirs/file"
run "output is a file" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/file"
expect_err "output is a file" "$TMP/dirs/file: exists and is not a directory"
one_line_err "output is a file"
check "the file is untouched" test "$(cat "$TMP/dirs/file")" = keep
run "output under a file" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/file/sub"
expect_err "output under a file" "$TMP/dirs/file/sub"
run "missing parent" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/no/such/dir"
expect_err "missing parent" "$TMP/dirs/no/such/dir: cannot create the directory"
check "missing parent: nothing created" test ! -e "$TMP/dirs/no"
if [ "$(id -u)" -ne 0 ]; then
    mkdir -p "$TMP/dirs/ro" "$TMP/dirs/roparent"
    chmod 555 "$TMP/dirs/ro" "$TMP/dirs/roparent"
    run "read-only dir" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/ro"
    expect_err "read-only dir" "$TMP/dirs/ro: cannot write there"
    run "read-only parent" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/roparent/out"
    expect_err "read-only parent" "$TMP/dirs/roparent/out: cannot create the directory"
    check "read-only: nothing written" test -z "$(ls -A "$TMP/dirs/ro" "$TMP/dirs/roparent")"
    chmod 755 "$TMP/dirs/ro" "$TMP/dirs/roparent"
else
    # root writes anywhere that permissions would stop others; /proc refuses even root
    run "unwritable dir (/proc)" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o /proc/self
    expect_err "unwritable dir (/proc)" "/proc/self"
    one_line_err "unwritable dir (/proc)"
    run "uncreatable dir (/proc)" 1 "$XCAP" attend -m "$MODEL" "$IMG" -o /proc/xcap_attend_test
    expect_err "uncreatable dir (/proc)" "/proc/xcap_attend_test: cannot create the directory"
fi
# a write that fails half way (file size limit): nothing left, an existing DIR unchanged
run "write fails half way" 1 bash -c "trap '' XFSZ; ulimit -f 8; exec \"\$@\"" _ "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/half"
expect_err "write fails half way" "$TMP/dirs/half/"
one_line_err "write fails half way"
check "write fails half way: no directory" test ! -e "$TMP/dirs/half"
check "write fails half way: no temporary files" test "$(leftovers)" -eq 0
mkdir "$TMP/dirs/existing" && echo mine >"$TMP/dirs/existing/notes.txt"
run "existing dir, write fails" 1 bash -c "trap '' XFSZ; ulimit -f 8; exec \"\$@\"" _ "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/existing"
check "existing dir unchanged" test "$(ls -A "$TMP/dirs/existing")" = notes.txt
check "existing dir: no temporary files" test "$(leftovers)" -eq 0
run "existing dir" 0 "$XCAP" attend -m "$MODEL" "$IMG" -o "$TMP/dirs/existing/"
check "existing dir: results and the user's file" test -s "$TMP/dirs/existing/attention.npy" -a -s "$TMP/dirs/existing/notes.txt"
check "existing dir: no temporary files after success" test "$(leftovers)" -eq 0
check "new dir has normal permissions" test "$(stat -c %a "$TMP/d0")" = "$(umask -S >/dev/null; mkdir "$TMP/perm" && stat -c %a "$TMP/perm")"

# --- caption --attention-dir ---
IMG2=tests/fixtures/images/gradient_32x32.png
run "caption plain" 0 "$XCAP" caption -m "$MODEL" "$IMG"
cp "$TMP/out" "$TMP/plain"
run "caption --attention-dir" 0 "$XCAP" caption -m "$MODEL" --attention-dir "$TMP/c1" "$IMG"
check "caption output unchanged by --attention-dir" cmp -s "$TMP/out" "$TMP/plain"
check "caption --attention-dir: same files as attend" test "$(ls "$TMP/c1")" = "$(ls "$TMP/d0")"
check "caption --attention-dir: same array as attend" cmp -s "$TMP/c1/attention.npy" "$TMP/d0/attention.npy"
run "caption several" 0 "$XCAP" caption -m "$MODEL" --attention-dir="$TMP/c2" --fusion rollout "$IMG" "$IMG2" "$IMG" - <"$IMG2"
check "caption several: one folder per image" test "$(ls "$TMP/c2" | tr '\n' ' ')" = "circles_200x150 circles_200x150-2 gradient_32x32 stdin "
check "caption several: rollout drawn" grep -q '"fusion":[[:space:]]*"rollout"' "$TMP/c2/gradient_32x32/attention.json"
check "caption several: the array of each image" cmp -s "$TMP/c2/circles_200x150-2/attention.npy" "$TMP/d0/attention.npy"
check "caption several: stdin array" cmp -s "$TMP/c2/stdin/attention.npy" "$TMP/c2/gradient_32x32/attention.npy"
run "caption --layer without --attention-dir" 2 "$XCAP" caption -m "$MODEL" --layer 0 "$IMG"
expect_err "caption --layer without --attention-dir" "need --attention-dir"
run "caption --attention-dir bad --head" 2 "$XCAP" caption -m "$MODEL" --attention-dir "$TMP/c3" --head 9 "$IMG"
check "caption bad --head: nothing written" test ! -e "$TMP/c3"
run "caption --attention-dir is a file" 1 "$XCAP" caption -m "$MODEL" --attention-dir "$TMP/dirs/file" "$IMG"
expect_err "caption --attention-dir is a file" "$TMP/dirs/file: exists and is not a directory"
run "caption several, a bad image" 1 "$XCAP" caption -m "$MODEL" --attention-dir "$TMP/c4" "$TMP/missing.png" "$IMG"
check "caption several, a bad image: the good one written" test -s "$TMP/c4/circles_200x150/attention.npy"
check "caption several, a bad image: no folder for it" test ! -e "$TMP/c4/missing"
run "caption several, all bad" 1 "$XCAP" caption -m "$MODEL" --attention-dir "$TMP/c5" "$TMP/missing.png" "$TMP/missing2.png"
check "caption several, all bad: no folder left" test ! -e "$TMP/c5"

echo "test_attend: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
