#!/usr/bin/env bash
# The hostile image corpus (tests/data/bad, written by its make_bad.py): `xcap caption` on each
# file exits with the expected code and either exactly the expected one-line error or the
# caption that Pillow's pixels of the same file get (tests/data/bad/expected.tsv). Never a crash
# or a hang (each run has a time limit), and never a caption for a file Pillow refuses.
# Also: a batch of all of them goes on past the bad ones, --max-pixels, standard input, and
# hostile model directories (a safetensors header claiming 1 TB, JSON files linked to /dev/zero,
# nested too deep, numbers beyond float). Usage: test_hostile.sh PATH/TO/xcap
set -u
XCAP=$1
MODEL=tests/fixtures/models/tiny
DIR=tests/data/bad
TMP=$(mktemp -d /tmp/xcap_hostile.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/shell_harness.sh" # ok, fail, counters (run is this test's own)

# run EXPECTED_CODE ARGS... : xcap with a time limit; stdout/stderr in $TMP/out, $TMP/err.
run() {
    local want=$1
    shift
    timeout 60 "$XCAP" "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -eq 124 ]; then
        fail "xcap $*: still running after 60 s"
    elif [ "$got" -gt 128 ]; then
        fail "xcap $*: killed by signal $((got - 128)); stderr: $(head -c 600 "$TMP/err")"
    elif [ "$got" -ne "$want" ]; then
        fail "xcap $*: exit $got, expected $want; stderr: $(head -c 400 "$TMP/err")"
    else
        ok
        return 0
    fi
    return 1
}
# expect_err_line LINE: stderr is exactly that one line.
expect_err_line() {
    if [ "$(cat "$TMP/err")" = "$1" ] && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok; else
        fail "stderr is not exactly '$1': $(head -c 400 "$TMP/err")"
    fi
}
json_field() { grep -o "\"$1\":[^,}]*" "$2" | head -1 | cut -d: -f2-; }
json_tokens() { grep -o '"tokens":\[[^]]*\]' "$1" | head -1; }

n_files=0
while IFS=$'\t' read -r file code want stricter; do
    case $file in '#'* | '') continue ;; esac
    n_files=$((n_files + 1))
    path=$DIR/$file
    run "$code" caption --json -m "$MODEL" "$path" || continue
    if [ "$code" -ne 0 ]; then
        expect_err_line "xcap: $path: $want"
        continue
    fi
    ref=$DIR/ref/${file%.*}.png
    cp "$TMP/out" "$TMP/got"
    run 0 caption --json -m "$MODEL" "$ref" || continue
    if [ "$(json_tokens "$TMP/got")" = "$(json_tokens "$TMP/out")" ]; then ok; else
        fail "$file: tokens $(json_tokens "$TMP/got"), Pillow's pixels give $(json_tokens "$TMP/out")"
    fi
    got_score=$(json_field score "$TMP/got") ref_score=$(json_field score "$TMP/out")
    tol=0
    [ "$want" = "~ref" ] && tol=0.01
    if awk -v a="$got_score" -v b="$ref_score" -v t="$tol" 'BEGIN { d = a - b; exit !(d <= t && -d <= t) }'; then ok; else
        fail "$file: score $got_score, Pillow's pixels give $ref_score (tolerance $tol)"
    fi
done <"$DIR/expected.tsv"

# Every file of the folder is listed, and xcap refuses what Pillow refuses (never a caption of
# garbage); a file Pillow decodes is refused only where expected.tsv says so on purpose.
for path in "$DIR"/*; do
    file=${path##*/}
    case $file in *.py | *.tsv | ref) continue ;; esac
    if grep -q "^$file	" "$DIR/expected.tsv"; then ok; else fail "$file is not in expected.tsv"; fi
done
while IFS=$'\t' read -r file verdict _; do
    case $file in '#'* | '') continue ;; esac
    line=$(grep "^$file	" "$DIR/expected.tsv")
    code=$(echo "$line" | cut -f2) mark=$(echo "$line" | cut -f4)
    if [ "$verdict" = refused ] && [ "$code" = 0 ]; then
        fail "$file: xcap captions a file Pillow refuses"
    elif [ "$verdict" = ok ] && [ "$code" != 0 ] && [ "$mark" != stricter ]; then
        fail "$file: Pillow decodes it but xcap refuses it (not marked stricter)"
    else
        ok
    fi
done <"$DIR/pillow.tsv"

# All of them in one run: one JSON line each, the good ones captioned, exit 1.
files=()
while IFS=$'\t' read -r file _; do
    case $file in '#'* | '') continue ;; esac
    files+=("$DIR/$file")
done <"$DIR/expected.tsv"
if run 1 caption --json -m "$MODEL" "${files[@]}"; then
    if [ "$(wc -l <"$TMP/out")" -eq "$n_files" ]; then ok; else fail "batch: $(wc -l <"$TMP/out") JSON lines for $n_files files"; fi
    n_ok=$(grep -c '"tokens"' "$TMP/out") n_want=$(grep -c '	0	' "$DIR/expected.tsv")
    if [ "$n_ok" -eq "$n_want" ]; then ok; else fail "batch: $n_ok captions, expected $n_want"; fi
fi

# --max-pixels: the limit is width x height, from the header.
run 1 caption -m "$MODEL" --max-pixels 9999 "$DIR/line_1x10000.png" &&
    expect_err_line "xcap: $DIR/line_1x10000.png: PNG image is 1x10000, larger than xcap accepts (16384 pixels per side, 9999 pixels in all)"
run 0 caption -m "$MODEL" --max-pixels=10000 "$DIR/line_1x10000.png"
run 2 caption -m "$MODEL" --max-pixels 0 "$DIR/one_pixel_1x1.png" &&
    expect_err_line "xcap: --max-pixels: expected an integer in [1, 268435456], got '0'"
run 2 caption -m "$MODEL" --max-pixels 268435457 "$DIR/one_pixel_1x1.png"
run 2 caption -m "$MODEL" --max-pixels "$DIR/one_pixel_1x1.png"
run 0 caption --help && if grep -q -- "--max-pixels N" "$TMP/out"; then ok; else fail "--help lacks --max-pixels"; fi

# Standard input gets the same checks, named <stdin>.
timeout 60 "$XCAP" caption -m "$MODEL" - <"$DIR/png_zlib_bomb.png" >"$TMP/out" 2>"$TMP/err"
if [ $? -eq 1 ]; then ok; else fail "zlib bomb on stdin: exit code"; fi
expect_err_line "xcap: <stdin>: PNG pixel data inflates to more than 76898 bytes where the 100x100 image needs 10100 (a decompression bomb?)"

# Missing file and directory.
run 1 caption -m "$MODEL" "$DIR/no_such_file.png" && expect_err_line "xcap: $DIR/no_such_file.png: No such file or directory"
run 1 caption -m "$MODEL" "$DIR/ref" && expect_err_line "xcap: $DIR/ref: read error: Is a directory"

# A model whose safetensors header length claims 1 TB is refused before anything is read.
mkdir "$TMP/m" && cp "$MODEL"/*.json "$MODEL"/merges.txt "$TMP/m/"
printf '\x00\x10\xa5\xd4\xe8\x00\x00\x00{}' >"$TMP/m/model.safetensors"
run 3 caption -m "$TMP/m" "$DIR/one_pixel_1x1.png" &&
    expect_err_line "xcap: cannot load model $TMP/m: $TMP/m/model.safetensors: header length 1000000000000 bytes is above the 100 MB limit (corrupt or not a safetensors file)"

# Model-directory files are read with a size cap counted while reading (so a link to /dev/zero
# ends quickly), JSON nesting is bounded, and numbers too large for a float are refused.
bad_model() { # FILE CONTENT-COMMAND MESSAGE: the tiny model with FILE replaced is refused
    rm -rf "$TMP/m" && mkdir "$TMP/m" && cp "$MODEL"/* "$TMP/m/" && rm -f "$TMP/m/$1"
    eval "$2" >/dev/null
    run 3 caption -m "$TMP/m" "$DIR/one_pixel_1x1.png" && expect_err_line "xcap: cannot load model $TMP/m: $TMP/m/$1: $3"
}
bad_model config.json 'ln -s /dev/zero "$TMP/m/config.json"' "file is larger than 4194304 bytes, the limit for this file"
bad_model vocab.json 'ln -s /dev/zero "$TMP/m/vocab.json"' "file is larger than 67108864 bytes, the limit for this file"
bad_model generation_config.json "{ printf '%01001d' 0 | tr 0 '['; printf '%01001d' 0 | tr 0 ']'; } >\"\$TMP/m/generation_config.json\"" \
    "invalid JSON near byte 1000"
bad_model config.json "sed 's/\"layer_norm_eps\": [^,]*/\"layer_norm_eps\": 1e300/' $MODEL/config.json >\"\$TMP/m/config.json\"" \
    "encoder.layer_norm_eps: is too large for a float"
bad_model preprocessor_config.json "sed 's/0.5,/1e39,/' $MODEL/preprocessor_config.json >\"\$TMP/m/preprocessor_config.json\"" \
    'key "image_mean": bad value 1e+39 (must be finite)'

echo "test_hostile: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
