#!/usr/bin/env bash
# index.html of `xcap attend` in headless Chromium, driven through the DevTools protocol over a
# pipe (--remote-debugging-pipe: NUL-terminated JSON on file descriptors 3 and 4, so no
# network port and nothing but bash): the page shows the caption; no map shows at first; moving
# the real mouse pointer onto each word shows exactly that word's map, over the image, and the
# pixels of the picture change; Tab (keyboard focus) switches maps the same way.
# Skipped when Chromium is not installed, unless $CI is set (CI installs it: Debian `chromium`).
# Usage: test_attend_html.sh PATH/TO/xcap
set -u
XCAP=$1
passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() {
    local name=$1
    shift
    if "$@"; then ok; else fail "$name"; fi
}

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
    if [ -n "${CI:-}" ]; then
        echo "FAIL: chromium is not installed, and CI must run this test (apt-get install chromium)" >&2
        echo "test_attend_html: 0 passed, 1 failed"
        exit 1
    fi
    echo "test_attend_html: skipped (chromium not installed; CI runs it)"
    echo "test_attend_html: 0 passed, 0 failed"
    exit 0
fi

TMP=$(mktemp -d /tmp/xcap_attend_html.XXXXXX)
CHROME_PID=""
cleanup() {
    if [ -n "$CHROME_PID" ] && kill -0 "$CHROME_PID" 2>/dev/null; then
        kill "$CHROME_PID" 2>/dev/null
        wait "$CHROME_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# A caption of several plain words: greedy on the GPT-2-vocabulary fixture, no token repeated.
MODEL=tests/fixtures/models/gpt2vocab
IMG=tests/fixtures/images/gradient_32x32.png
OPTS=(--no-repeat-ngram 1 --max-tokens 8)
if ! "$XCAP" attend -m "$MODEL" "${OPTS[@]}" "$IMG" -o "$TMP/page" >/dev/null 2>"$TMP/attend.err"; then
    fail "xcap attend: $(cat "$TMP/attend.err")"
    echo "test_attend_html: $passed passed, $failed failed"
    exit 1
fi
caption=$("$XCAP" caption -m "$MODEL" "${OPTS[@]}" "$IMG")
n_words=$(grep -o '<span class="word"' "$TMP/page/index.html" | wc -l)
check "the fixture caption has several words ($n_words)" test "$n_words" -ge 2

# --- the DevTools protocol over a pipe ---
mkfifo "$TMP/to_chrome" "$TMP/from_chrome"
exec 5<>"$TMP/to_chrome" 6<>"$TMP/from_chrome"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --no-default-browser-check --window-size=1000,1000 --user-data-dir="$TMP/profile" \
    --remote-debugging-pipe about:blank 3<"$TMP/to_chrome" 4>"$TMP/from_chrome" 2>"$TMP/chromium.log" &
CHROME_PID=$!
msg_id=0
SESSION=""
REPLY_MSG=""
# cdp METHOD PARAMS_JSON: sends one command (to the page's session once attached) and leaves
# its reply in REPLY_MSG; events arriving meanwhile are skipped. Fails after 30 s of silence.
cdp() {
    msg_id=$((msg_id + 1))
    local session="" msg
    [ -n "$SESSION" ] && session=",\"sessionId\":\"$SESSION\""
    printf '{"id":%d%s,"method":"%s","params":%s}\0' "$msg_id" "$session" "$1" "$2" >&5
    while IFS= read -r -d '' -t 30 msg <&6; do
        case $msg in
        "{\"id\":$msg_id,"*)
            REPLY_MSG=$msg
            case $msg in *'"error":'*) echo "cdp $1: $msg" >&2; return 1 ;; esac
            return 0
            ;;
        esac
    done
    REPLY_MSG=""
    echo "cdp $1: no reply; chromium log: $(tail -c 600 "$TMP/chromium.log")" >&2
    return 1
}
# js EXPRESSION: evaluates in the page; the (string) result goes to JS_VALUE. Expressions
# return strings free of '"' and '\' so the value can be cut out of the reply with sed.
js() {
    local expr=${1//\\/\\\\}
    expr=${expr//\"/\\\"}
    JS_VALUE=""
    cdp Runtime.evaluate "{\"expression\":\"String($expr)\",\"returnByValue\":true}" || return 1
    JS_VALUE=$(printf '%s' "$REPLY_MSG" | sed -n 's/.*"value":"\([^"]*\)".*/\1/p')
}
finish() {
    [ -n "$SESSION" ] && { SESSION=""; cdp Browser.close '{}' >/dev/null 2>&1; }
    echo "test_attend_html: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

cdp Target.createTarget "{\"url\":\"file://$TMP/page/index.html\"}" || { fail "open the page"; finish; }
target=$(printf '%s' "$REPLY_MSG" | sed -n 's/.*"targetId":"\([^"]*\)".*/\1/p')
cdp Target.attachToTarget "{\"targetId\":\"$target\",\"flatten\":true}" || { fail "attach to the page"; finish; }
SESSION=$(printf '%s' "$REPLY_MSG" | sed -n 's/.*"sessionId":"\([^"]*\)".*/\1/p')
check "attached to the page" test -n "$SESSION"
loaded=""
for _ in $(seq 1 100); do
    # the new target starts as a complete about:blank: wait for our file's document itself
    js "location.protocol === 'file:' && document.readyState === 'complete' && document.querySelectorAll('.word').length > 0 && Array.from(document.images).every(function (i) { return i.complete && i.naturalWidth > 0; })"
    [ "$JS_VALUE" = true ] && { loaded=1; break; }
    sleep 0.1
done
check "page and all its images loaded" test -n "$loaded"

# the caption, compared as base64 of its UTF-8 bytes (any characters survive the trip)
js "btoa(unescape(encodeURIComponent(Array.from(document.querySelectorAll('.word')).map(function (w) { return w.textContent; }).join(' '))))"
check "the page shows the caption '$caption'" test "$JS_VALUE" = "$(printf '%s' "$caption" | base64 -w0)"
js "document.querySelectorAll('.word').length + ' ' + document.querySelectorAll('img.map').length"
check "one map per word ($JS_VALUE)" test "$JS_VALUE" = "$n_words $n_words"
# which maps are visible (hidden attribute off and really displayed), e.g. "2"
VISIBLE="Array.from(document.querySelectorAll('img.map')).filter(function (m) { return !m.hidden && getComputedStyle(m).display !== 'none' && m.getBoundingClientRect().width > 0; }).map(function (m) { return m.getAttribute('data-word'); }).join(',')"
js "$VISIBLE"
check "no map before a word is chosen ('$JS_VALUE')" test -z "$JS_VALUE"
# the picture region, for screenshots
js "(function () { var r = document.getElementById('view').getBoundingClientRect(); return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)].join(' '); })()"
read -r vx vy vw vh <<<"$JS_VALUE"
picture() { # md5 of a screenshot of the picture region
    cdp Page.captureScreenshot "{\"format\":\"png\",\"clip\":{\"x\":$vx,\"y\":$vy,\"width\":$vw,\"height\":$vh,\"scale\":1}}" || return
    printf '%s' "$REPLY_MSG" | sed -n 's/.*"data":"\([^"]*\)".*/\1/p' | md5sum | cut -c1-32
}
plain=$(picture)
check "screenshot of the picture" test -n "$plain"

# --- hover: the real pointer moved onto each word ---
declare -a shots
for ((i = 0; i < n_words; i++)); do
    js "(function () { var w = document.querySelectorAll('.word')[$i]; w.scrollIntoView({block: 'center'}); var r = w.getBoundingClientRect(); return Math.round(r.left + r.width / 2) + ' ' + Math.round(r.top + r.height / 2); })()"
    read -r x y <<<"$JS_VALUE"
    cdp Input.dispatchMouseEvent "{\"type\":\"mouseMoved\",\"x\":$x,\"y\":$y}" || fail "move the mouse to word $i"
    js "$VISIBLE"
    check "hovering word $i shows its map only ('$JS_VALUE')" test "$JS_VALUE" = "$i"
    js "(function () { var m = document.querySelector('img.map[data-word=\"$i\"]').getBoundingClientRect(), v = document.getElementById('image').getBoundingClientRect(); return Math.abs(m.left - v.left) < 1 && Math.abs(m.top - v.top) < 1 && Math.abs(m.width - v.width) < 1 && Math.abs(m.height - v.height) < 1; })()"
    check "word $i's map covers the image" test "$JS_VALUE" = true
    js "document.elementFromPoint($x, $y).getAttribute('data-word')"
    check "word $i is what the pointer is on" test "$JS_VALUE" = "$i"
    # a frame or two may pass before the new map is painted: look again for up to 2 s
    for _ in $(seq 1 10); do
        shots[$i]=$(picture)
        [ "${shots[$i]}" != "$plain" ] && break
        sleep 0.2
    done
    check "word $i changes the picture" test "${shots[$i]}" != "$plain"
done
check "words 0 and 1 draw different pictures" test "${shots[0]}" != "${shots[1]}"

# --- keyboard: Tab moves focus from word to word, and the map follows ---
cdp Input.dispatchMouseEvent '{"type":"mouseMoved","x":1,"y":1}'
js "document.activeElement && document.activeElement.blur && document.activeElement.blur(), window.scrollTo(0, 0), 'ok'"
for ((i = 0; i < 2; i++)); do
    cdp Input.dispatchKeyEvent '{"type":"keyDown","key":"Tab","code":"Tab","windowsVirtualKeyCode":9}'
    cdp Input.dispatchKeyEvent '{"type":"keyUp","key":"Tab","code":"Tab","windowsVirtualKeyCode":9}'
    js "document.activeElement.getAttribute('data-word')"
    check "Tab $((i + 1)) focuses word $i ('$JS_VALUE')" test "$JS_VALUE" = "$i"
    js "$VISIBLE"
    check "focusing word $i shows its map only ('$JS_VALUE')" test "$JS_VALUE" = "$i"
    for _ in $(seq 1 10); do
        shot=$(picture)
        [ "$shot" = "${shots[$i]}" ] && break
        sleep 0.2
    done
    check "focusing word $i draws its picture" test "$shot" = "${shots[$i]}"
done
js "document.getElementById('status').textContent.indexOf('Showing') === 0"
check "the status line names the shown word" test "$JS_VALUE" = true
finish
