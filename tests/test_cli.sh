#!/usr/bin/env bash
# The xcap command line: every subcommand and flag, exit codes, and bad input (images and model
# directories) each getting a one-line error that names the file. Usage: test_cli.sh PATH/TO/xcap
set -u
XCAP=$1
MODEL=tests/fixtures/models/tiny
IMG=tests/fixtures/images/gradient_32x32.png
IMG2=tests/fixtures/images/circles_200x150.png
TMP=$(mktemp -d /tmp/xcap_cli.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/shell_harness.sh" # ok, fail, run, expect_out, expect_err, finish
expect_lines() {
    local n
    n=$(wc -l <"$TMP/$2")
    if [ "$n" -eq "$3" ]; then ok; else fail "$1: $2 has $n lines, expected $3"; fi
}

# --- help and version ---
run "--help" 0 "$XCAP" --help
for flag in --model --threads --max-tokens --max-length --min-length --min-tokens --beams --length-penalty \
    --early-stopping --n-best --greedy --sample --temperature --top-k --top-p --seed --repetition-penalty \
    --no-repeat-ngram --json "Exit codes"; do
    expect_out "--help lists $flag" "$flag"
done
expect_out "--help shows the max-length default" "(default: 20)"
run "caption --help" 0 "$XCAP" caption --help
expect_out "caption --help" "usage: xcap caption"
run "--version" 0 "$XCAP" --version
expect_out "--version" "^xcap [0-9]"
run "no command" 2 "$XCAP"
run "unknown command" 2 "$XCAP" frobnicate
expect_err "unknown command" "unknown command 'frobnicate'"

# --- captioning ---
run "one image" 0 "$XCAP" caption -m "$MODEL" "$IMG"
expect_lines "one image" out 1
cp "$TMP/out" "$TMP/one"
run "two images" 0 "$XCAP" caption -m "$MODEL" "$IMG" "$IMG2"
expect_lines "two images" out 2
expect_out "two images are prefixed" "^$IMG: "
run "stdin" 0 "$XCAP" caption -m "$MODEL" - <"$IMG"
if cmp -s "$TMP/out" "$TMP/one"; then ok; else fail "stdin caption differs from the file's"; fi
run "XCAP_MODEL" 0 env XCAP_MODEL="$MODEL" "$XCAP" caption "$IMG"
if cmp -s "$TMP/out" "$TMP/one"; then ok; else fail "XCAP_MODEL caption differs from -m"; fi
run "--json" 0 "$XCAP" caption -m "$MODEL" --json "$IMG"
expect_out "--json" '"caption":'
expect_out "--json" '"tokens":\['
expect_out "--json" '"file":"tests/fixtures/images/gradient_32x32.png"'
run "--json n-best" 0 "$XCAP" caption -m "$MODEL" --json --beams 3 --n-best 3 "$IMG"
expect_out "--json n-best" '"n_best":\[{'
run "n-best text" 0 "$XCAP" caption -m "$MODEL" --beams 4 --n-best 2 "$IMG"
expect_lines "n-best text" out 2
for opts in "-t 1" "--threads=2" "--max-tokens 3" "--max-length 5" "--min-length 4" "--min-tokens 2" \
    "--beams 2" "--beams 3 --length-penalty 0.5" "--beams 2 --early-stopping true" "--beams 2 --early-stopping never" \
    "--greedy" "--sample --seed 3" "--temperature 0.7 --seed 1" "--top-k 5 --seed 2" "--top-p 0.9 --seed 2" \
    "--repetition-penalty 1.3" "--no-repeat-ngram 2" "-v"; do
    # shellcheck disable=SC2086
    run "option $opts" 0 "$XCAP" caption -m "$MODEL" $opts "$IMG"
    expect_lines "option $opts" out 1
done
run "--max-tokens 3 tokens" 0 "$XCAP" caption -m "$MODEL" --json --max-tokens 3 "$IMG"
if grep -Eq '"tokens":\[[0-9]+(,[0-9]+){0,2}\]' "$TMP/out"; then ok; else fail "--max-tokens 3 gave more tokens: $(cat "$TMP/out")"; fi
run "seeded sampling 1" 0 "$XCAP" caption -m "$MODEL" --sample --temperature 1.5 --seed 42 "$IMG"
cp "$TMP/out" "$TMP/s1"
run "seeded sampling 2" 0 "$XCAP" caption -m "$MODEL" --sample --temperature 1.5 --seed 42 "$IMG"
if cmp -s "$TMP/out" "$TMP/s1"; then ok; else fail "same seed gave different captions"; fi

# --- usage errors: exit 2 ---
run "no image" 2 "$XCAP" caption -m "$MODEL"
run "unknown option" 2 "$XCAP" caption -m "$MODEL" --frobnicate "$IMG"
expect_err "unknown option" "unknown option '--frobnicate'"
for bad in "--beams 0" "--beams x" "--max-tokens -1" "--temperature 0" "--top-p 1.5" "--early-stopping maybe" \
    "--seed -4" "--threads" "--beams 2 --n-best 3" "--beams 2 --sample"; do
    # shellcheck disable=SC2086
    run "bad value $bad" 2 "$XCAP" caption -m "$MODEL" $bad "$IMG"
    if [ "$(wc -l <"$TMP/err")" -ge 1 ]; then ok; else fail "bad value $bad: no message"; fi
done
run "stdin twice" 2 "$XCAP" caption -m "$MODEL" - - </dev/null

# --- bad images: exit 1, the others still captioned ---
: >"$TMP/empty.png"
head -c 900 "$IMG2" >"$TMP/truncated.png"
echo "this is not an image" >"$TMP/notes.png"
for f in "$TMP/empty.png" "$TMP/truncated.png" "$TMP/notes.png" "$TMP/missing.png"; do
    run "bad image $(basename "$f")" 1 "$XCAP" caption -m "$MODEL" "$f" "$IMG"
    expect_err "bad image $(basename "$f")" "$f"
    expect_out "bad image $(basename "$f") spares the good one" "^$IMG: "
    expect_lines "bad image $(basename "$f") one line" err 1
done
run "bad image json" 1 "$XCAP" caption -m "$MODEL" --json "$TMP/empty.png" "$IMG"
expect_out "bad image json" '"error":'
expect_lines "bad image json" out 2

# --- bad models: exit 3, one line naming the file ---
bad_model() { # NAME NEEDLE: the model dir is $TMP/m
    run "bad model $1" 3 "$XCAP" caption -m "$TMP/m" "$IMG"
    expect_err "bad model $1" "$2"
    expect_lines "bad model $1" err 1
    rm -rf "$TMP/m"
}
fresh() { rm -rf "$TMP/m" && cp -r "$MODEL" "$TMP/m"; }
run "missing model dir" 3 "$XCAP" caption -m "$TMP/nowhere" "$IMG"
expect_err "missing model dir" "$TMP/nowhere/config.json"
fresh && echo '{"model_type": ' >"$TMP/m/config.json" && bad_model "bad config JSON" "config.json: invalid JSON"
fresh && rm "$TMP/m/model.safetensors" && bad_model "no safetensors" "model.safetensors: No such file"
fresh && head -c 2000 "$MODEL/model.safetensors" >"$TMP/m/model.safetensors" && bad_model "truncated safetensors" "model.safetensors"
fresh && : >"$TMP/m/model.safetensors" && bad_model "empty safetensors" "too short"
fresh && perl -pi -e 's/ln_f\.weight/ln_f.weighX/' "$TMP/m/model.safetensors" &&
    bad_model "missing tensor" "tensor decoder.transformer.ln_f.weight \[[0-9]*\] is missing"
fresh && # swap the two dimensions of a Conv1D weight: same byte count, so only the shape check can see it
fresh && perl -pi -e 's/(h\.0\.mlp\.c_fc\.weight":\{"dtype":"F32","shape":\[)(\d+),(\d+)\]/$1$3,$2]/' "$TMP/m/model.safetensors" &&
    bad_model "wrong shape" "tensor decoder.transformer.h.0.mlp.c_fc.weight (F32): expected \[64,256\], found \[256,64\]"
fresh && rm "$TMP/m/merges.txt" && bad_model "no merges" "merges.txt"
fresh && echo '{' >"$TMP/m/vocab.json" && bad_model "bad vocab" "vocab.json"
fresh && echo '{"size": "big"}' >"$TMP/m/preprocessor_config.json" && bad_model "bad preprocessor" "preprocessor_config.json"
fresh && echo '{"num_beams": "four"}' >"$TMP/m/generation_config.json" && bad_model "bad generation config" "generation_config.json"

echo "test_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
