#!/usr/bin/env bash
# `xcap batch` end to end on a generated tree: nested folders, names with spaces, quotes, commas,
# newlines and bytes that are not UTF-8, symlink loops, corrupt / truncated / empty / non-image /
# too-large / non-regular files. Checks: one record per image and the same caption as
# `xcap caption`; error records naming the file; exit codes 0/1/2/3; JSONL == CSV (read back with
# Python's csv module); kill -9 at several points (test hook and real kill) then resume == an
# uninterrupted run; --shard k/3 (directly, through xargs -P and GNU parallel) == one run;
# sidecars; include/exclude; the HTML gallery; progress output.
# Usage: test_batch.sh PATH/TO/xcap   (Python: /usr/bin/python3, standard library only)
set -u
XCAP=$(realpath "$1")
MODEL=tests/fixtures/models/tiny
PY=/usr/bin/python3
TMP=$(mktemp -d /tmp/xcap_batch.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
TREE=$TMP/tree
passed=0
failed=0

ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }
check() { if "$@"; then ok; else fail "$*"; fi; }

# run NAME EXPECTED_CODE CMD... : stdout/stderr kept in $TMP/out, $TMP/err
run() {
    local name=$1 want=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else fail "$name: exit $got, expected $want; stderr: $(head -c 600 "$TMP/err")"; fi
}
expect_err() { if grep -q -- "$2" "$TMP/err"; then ok; else fail "$1: stderr lacks '$2': $(head -c 400 "$TMP/err")"; fi; }
# py NAME ARGS...: a check done by the Python helper below; it prints what is wrong
py() {
    local name=$1
    shift
    if "$PY" "$TMP/check.py" "$@" >"$TMP/py.out" 2>&1; then ok; else fail "$name: $(head -c 1500 "$TMP/py.out")"; fi
}
same_records() { py "$1" same "$2" "$3" "$4" "$5"; } # NAME FMT_A FILE_A FMT_B FILE_B

cat >"$TMP/check.py" <<'PYEOF'
import base64, csv, json, os, shutil, subprocess, sys
from html.parser import HTMLParser

def b64(b): return base64.b64encode(b).decode()

def make_tree(root, fixtures):
    """Writes the tree and expect.json: the recorded path of every image, good and bad."""
    img, fmt = os.path.join(fixtures, 'images'), os.path.join(fixtures, 'imgfmt')
    good = {
        'top.png': img + '/gradient_32x32.png', 'UPPER.PNG': img + '/checker_33x33.png',
        'photo.JPG': fmt + '/jpg_baseline.jpg', 'same.png': img + '/noise_17x23.png',
        'same.jpg': fmt + '/jpg_444.jpg', 'nested/deeper/deepest/rings.png': img + '/rings_96x96.png',
        'nested/deeper/grey.bmp': fmt + '/bmp_rgb.bmp', 'nested/anim.gif': fmt + '/gif.gif',
        'nested/pic.tga': fmt + '/tga_rgb.tga', 'nested/pic.ppm': fmt + '/pnm_rgb.ppm',
        'nested/pic.psd': fmt + '/psd_rgb.psd', 'with space/a b.png': img + '/circles_200x150.png',
        'quotes/it\'s "quoted", ok.png': img + '/tiny_5x3.png', 'quotes/a,b.png': img + '/diag_77x77.png',
        'newline/line1\nline2.png': img + '/stripes_100x37.png', 'unicode/naïve ☃.png': img + '/tall_13x71.png',
    }
    for i, name in enumerate(sorted(os.listdir(img))[:12]):
        if name.endswith('.png'): good['many/img_%02d.png' % i] = img + '/' + name
    good_bytes = {k.encode(): v for k, v in good.items()}
    good_bytes[b'latin1/caf\xe9.png'] = img + '/palette_50x50.png'
    good_bytes[b'latin1/\xff\xfe dir/x.png'] = img + '/grey_60x45.png'
    bad = {'bad/empty.png': None, 'bad/truncated.png': fmt + '/bad/truncated.png',
           'bad/garbage.jpg': fmt + '/bad/garbage.jpg', 'bad/text.png': fmt + '/bad/text.png',
           'bad/huge.png': fmt + '/bad/huge.png', 'bad/truncated.jpg': fmt + '/bad/truncated.jpg'}
    rootb = os.fsencode(root)
    def put(rel, src):
        path = rootb + b'/' + rel
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if src is None: open(path, 'wb').close()
        else: shutil.copyfile(src, path)
    for rel, src in good_bytes.items(): put(rel, src)
    for rel, src in bad.items(): put(rel.encode(), src)
    bad_rel = [k.encode() for k in bad]
    # files that are not taken: other extensions, no extension
    for rel in ['notes.txt', 'README', 'bad/webp.webp', 'nested/deeper/data.json']:
        open(rootb + b'/' + rel.encode(), 'w').write('not an image\n')
    # links: a dangling one and one to itself (error records), a FIFO (never opened)
    os.symlink('nowhere.png', rootb + b'/bad/dangling.png')
    os.symlink('self.png', rootb + b'/bad/self.png')
    os.mkfifo(rootb + b'/bad/fifo.png')
    bad_rel += [b'bad/dangling.png', b'bad/self.png', b'bad/fifo.png']
    # directory loops (skipped), and a link to a folder that is not an ancestor (walked)
    os.makedirs(rootb + b'/loop')
    os.symlink('..', rootb + b'/loop/up')
    os.symlink('../loop', rootb + b'/loop/again')
    os.symlink('nested/deeper', rootb + b'/linked')
    for rel in list(good_bytes):
        if rel.startswith(b'nested/deeper/'):
            good_bytes[b'linked/' + rel[len(b'nested/deeper/'):]] = None
    expect = {'good': sorted(b64(rootb + b'/' + r) for r in good_bytes),
              'bad': sorted(b64(rootb + b'/' + r) for r in bad_rel)}
    json.dump(expect, open(os.path.join(os.path.dirname(root), 'expect.json'), 'w'))

def load(fmt, path):
    """Records as normalised dicts keyed by path bytes (base64)."""
    data = open(path, 'rb').read()
    recs = []
    if fmt == 'jsonl':
        if data and not data.endswith(b'\n'): raise SystemExit('%s does not end with a newline' % path)
        for line in data.split(b'\n')[:-1]:
            o = json.loads(line.decode('utf-8'))  # strict: the file must be UTF-8
            key = o['path_base64'] if 'path_base64' in o else b64(o['path'].encode())
            r = {'key': key, 'path': o['path'], 'width': o.get('width'), 'height': o.get('height'),
                 'caption': o.get('caption'), 'tokens': o.get('tokens'), 'score': o.get('score'),
                 'sum_logprob': o.get('sum_logprob'), 'error': o.get('error')}
            if 'n_best' in o: r['n_best'] = [(h['caption'], h['score']) for h in o['n_best']]
            recs.append(r)
    else:
        with open(path, newline='', encoding='utf-8') as f:
            rows = list(csv.reader(f))
        header = rows[0]
        for row in rows[1:]:
            if len(row) != len(header): raise SystemExit('row of %d fields, header has %d: %r' % (len(row), len(header), row))
            o = dict(zip(header, row))
            key = o['path_base64'] or b64(o['path'].encode())
            num = lambda s: float(s) if s != '' else None
            r = {'key': key, 'path': o['path'], 'width': int(o['width']) if o['width'] else None,
                 'height': int(o['height']) if o['height'] else None, 'caption': None, 'tokens': None,
                 'score': None, 'sum_logprob': None, 'error': o['error'] or None}
            if not o['error']:
                r.update(caption=o['caption'], tokens=[int(t) for t in o['tokens'].split()],
                         score=num(o['score']), sum_logprob=num(o['sum_logprob']))
            k = 2
            if 'caption_2' in o and not o['error']:
                nb = [(r['caption'], r['score'])]
                while 'caption_%d' % k in o:
                    if o['caption_%d' % k] or o['score_%d' % k]: nb.append((o['caption_%d' % k], num(o['score_%d' % k])))
                    k += 1
                r['n_best'] = nb
            recs.append(r)
    return recs

def check(fmt, path, expect_path):
    """Exactly one record per image: good ones captioned, bad ones an error naming the file."""
    recs, expect = load(fmt, path), json.load(open(expect_path))
    problems = []
    keys = [r['key'] for r in recs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup: problems.append('duplicated: %r' % [base64.b64decode(k) for k in dup])
    want = set(expect['good']) | set(expect['bad'])
    if set(keys) != want:
        problems.append('missing: %r' % [base64.b64decode(k) for k in want - set(keys)])
        problems.append('unexpected: %r' % [base64.b64decode(k) for k in set(keys) - want])
    for r in recs:
        raw = base64.b64decode(r['key'])
        shown = raw.decode('utf-8', 'replace')
        if r['path'] != shown: problems.append('path %r shown as %r' % (raw, r['path']))
        if r['key'] in expect['good'] and (r['caption'] is None or r['error'] or not r['width'] or not r['tokens']):
            problems.append('good image without a caption: %r' % r)
        if r['key'] in expect['bad'] and (not r['error'] or shown not in r['error'] or r['caption'] is not None):
            problems.append('bad image without an error naming it: %r' % r)
    if problems: raise SystemExit('\n'.join(problems))

def canon(fmt, path):
    return sorted(json.dumps(r, sort_keys=True) for r in load(fmt, path))

def same(fa, a, fb, b):
    ca, cb = canon(fa, a), canon(fb, b)
    if ca != cb:
        sa, sb = set(ca), set(cb)
        raise SystemExit('%d vs %d records; only in %s: %s\nonly in %s: %s' % (
            len(ca), len(cb), a, sorted(sa - sb)[:3], b, sorted(sb - sa)[:3]))

def captions(xcap, model, path):
    """Each captioned record against `xcap caption --json` on that file (one call per file)."""
    problems = []
    for r in load('jsonl', path):
        if r['caption'] is None: continue
        raw = base64.b64decode(r['key'])
        out = subprocess.run([xcap, 'caption', '-m', model, '--json', raw], capture_output=True)
        # its "file" field carries the raw bytes of the name: read them as such
        o = json.loads(out.stdout.decode('utf-8', 'surrogateescape'))
        for field in ('caption', 'tokens', 'score', 'sum_logprob'):
            if o.get(field) != r[field]: problems.append('%r %s: batch %r, caption %r' % (raw, field, r[field], o.get(field)))
    if problems: raise SystemExit('\n'.join(problems))

def sidecars(jsonl, root, out_dir):
    """Every captioned image has its sidecar with the caption, stem.txt unless two images share
    the stem; no temporary files are left."""
    root = os.fsencode(root)
    recs = load('jsonl', jsonl)
    stems = {}
    for r in recs:
        raw = base64.b64decode(r['key'])
        stems.setdefault(os.path.splitext(raw)[0], []).append(raw)
    problems = []
    want = set()
    for r in recs:
        raw = base64.b64decode(r['key'])
        if r['caption'] is None: continue
        base = os.path.splitext(raw)[0] if len(stems[os.path.splitext(raw)[0]]) == 1 else raw
        side = base + b'.txt'
        if out_dir != '-': side = os.fsencode(out_dir) + side[len(root):]
        want.add(side)
        try: text = open(side, 'rb').read()
        except OSError as e: problems.append('no sidecar %r: %s' % (side, e)); continue
        if text != r['caption'].encode() + b'\n': problems.append('%r holds %r, caption is %r' % (side, text, r['caption']))
    top = os.fsencode(out_dir) if out_dir != '-' else root
    for d, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            if f.endswith(b'.xcap-tmp'): problems.append('left behind: %r' % p)
            if f.endswith(b'.txt') and p not in want and f != b'notes.txt': problems.append('extra sidecar: %r' % p)
    if problems: raise SystemExit('\n'.join(problems))

class Page(HTMLParser):
    def __init__(self):
        super().__init__(); self.figures = 0; self.failed = 0; self.imgs = []; self.links = []; self.rows = 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'figure': self.figures += 1; self.failed += a.get('class') == 'failed'
        if tag == 'img': self.imgs.append(a['src'])
        if tag == 'a': self.links.append(a['href'])
        if tag == 'tr': self.rows += 1

def gallery(d, expect_path, page_size):
    page_size = int(page_size)
    from urllib.parse import unquote_to_bytes
    expect = json.load(open(expect_path))
    n_good, n_bad = len(expect['good']), len(expect['bad'])
    pages = sorted(f for f in os.listdir(d) if f.endswith('.html') and f != 'failures.html')
    n_pages = -(-(n_good + n_bad) // page_size)
    problems = []
    if len(pages) != n_pages: problems.append('%d pages, expected %d' % (len(pages), n_pages))
    figures = failed = imgs = 0
    for name in pages:
        text = open(os.path.join(d, name), encoding='utf-8').read()
        if 'http:' in text or 'https:' in text or '//' in text.replace('://', ''): problems.append(name + ' refers to the network')
        p = Page(); p.feed(text)
        figures += p.figures; failed += p.failed; imgs += len(p.imgs)
        for src in p.imgs + p.links:
            if src.endswith('.html'): continue
            target = os.path.join(os.fsencode(d), unquote_to_bytes(src))
            if not os.path.exists(target): problems.append('%s: %s leads nowhere' % (name, src))
    if figures != n_good + n_bad: problems.append('%d figures, expected %d' % (figures, n_good + n_bad))
    if failed != n_bad: problems.append('%d failed figures, expected %d' % (failed, n_bad))
    if imgs != n_good: problems.append('%d thumbnails, expected %d' % (imgs, n_good))
    p = Page(); p.feed(open(os.path.join(d, 'failures.html'), encoding='utf-8').read())
    if p.rows != n_bad: problems.append('failures.html lists %d, expected %d' % (p.rows, n_bad))
    if problems: raise SystemExit('\n'.join(problems))

def count(fmt, path): print(len(load(fmt, path)))

globals()[sys.argv[1]](*sys.argv[2:])
PYEOF

"$PY" "$TMP/check.py" make_tree "$TREE" tests/fixtures || { echo "test_batch: cannot build the tree"; exit 1; }
EXPECT=$TMP/expect.json
n_images=$("$PY" -c 'import json,sys; e=json.load(open(sys.argv[1])); print(len(e["good"])+len(e["bad"]))' "$EXPECT")
B=("$XCAP" batch -m "$MODEL")

# --- one uninterrupted run: the reference for everything below ---
run "baseline jsonl" 1 "${B[@]}" -o "$TMP/base.jsonl" "$TREE"
py "baseline records" check jsonl "$TMP/base.jsonl" "$EXPECT"
py "captions equal xcap caption's" captions "$XCAP" "$MODEL" "$TMP/base.jsonl"
expect_err "symlink loop reported" "symlink loop"
expect_err "summary" "captioned, 0 skipped, 9 failed"
expect_err "summary lists failures" "first failures:"
expect_err "summary rate" "images/s"
run "to stdout" 1 "${B[@]}" -q "$TREE"
check cmp -s "$TMP/out" "$TMP/base.jsonl"
check test ! -s "$TMP/err" # --quiet
run "order does not depend on threads" 1 "${B[@]}" -q -j 2 --decode-threads 3 --batch-size 1 "$TREE"
check cmp -s "$TMP/out" "$TMP/base.jsonl"
# Records, scores included, are the same bytes whichever images share an encoder pass.
for size in 3 64; do
    run "--batch-size $size gives the same records" 1 "${B[@]}" -q --decode-threads 3 --batch-size "$size" "$TREE"
    check cmp -s "$TMP/out" "$TMP/base.jsonl"
done
run "an argument inside another is not doubled" 0 "${B[@]}" -q "$TREE/nested" "$TREE/top.png" "$TREE/nested/anim.gif"
check test "$(wc -l <"$TMP/out")" -eq 7 # nested: 6 images, anim.gif named twice: once
run "a good tree exits 0" 0 "${B[@]}" -q "$TREE/many" "$TREE/nested"
run "an image named directly, any extension" 0 "${B[@]}" -q --format txt --out-dir "$TMP/direct" "$TREE/top.png"
check test -s "$TMP/direct/top.txt"

# paths as given: "." records them without "./"
(cd "$TREE/nested" && "$XCAP" batch -m "$OLDPWD/$MODEL" -q . >"$TMP/dot.jsonl" 2>/dev/null)
check grep -q '^{"path":"deeper/grey.bmp"' "$TMP/dot.jsonl"
run "trailing slash" 0 "${B[@]}" -q "$TREE/nested/"
check grep -q "^{\"path\":\"$TREE/nested/anim.gif\"" "$TMP/out"

# --- CSV: read back with Python's csv module, the same records as JSONL ---
run "csv" 1 "${B[@]}" -q --format csv -o "$TMP/base.csv" "$TREE"
py "csv records" check csv "$TMP/base.csv" "$EXPECT"
same_records "csv == jsonl" csv "$TMP/base.csv" jsonl "$TMP/base.jsonl"
run "csv to stdout" 1 "${B[@]}" -q --format csv "$TREE"
check cmp -s "$TMP/out" "$TMP/base.csv"
run "n-best jsonl" 1 "${B[@]}" -q --beams 3 --n-best 2 -o "$TMP/nb.jsonl" "$TREE/nested" "$TREE/bad/empty.png"
run "n-best csv" 1 "${B[@]}" -q --beams 3 --n-best 2 --format csv -o "$TMP/nb.csv" "$TREE/nested" "$TREE/bad/empty.png"
check grep -q '"n_best":\[{"caption"' "$TMP/nb.jsonl"
check grep -q '^path,path_base64,width,height,caption,score,sum_logprob,tokens,error,caption_2,score_2$' "$TMP/nb.csv"
same_records "n-best csv == jsonl" csv "$TMP/nb.csv" jsonl "$TMP/nb.jsonl"
run "csv resume needs the same columns" 2 "${B[@]}" -q --format csv -o "$TMP/nb.csv" "$TREE/nested"
expect_err "csv header mismatch" "header"

# --- resume: skip what is recorded, --overwrite redoes it ---
cp "$TMP/base.jsonl" "$TMP/again.jsonl"
run "rerun skips everything" 0 "${B[@]}" -o "$TMP/again.jsonl" "$TREE"
check cmp -s "$TMP/again.jsonl" "$TMP/base.jsonl"
expect_err "rerun summary" "0 captioned, $n_images skipped (9 of them failed before), 0 failed"
run "--overwrite" 1 "${B[@]}" -q --overwrite -o "$TMP/again.jsonl" "$TREE"
check cmp -s "$TMP/again.jsonl" "$TMP/base.jsonl"
head -n 5 "$TMP/base.jsonl" >"$TMP/part.jsonl"
run "resume after 5" 1 "${B[@]}" -q -o "$TMP/part.jsonl" "$TREE"
same_records "resume after 5" jsonl "$TMP/part.jsonl" jsonl "$TMP/base.jsonl"
printf '{"path": "x.png", "caption' >>"$TMP/part.jsonl"
run "a torn last line is cut" 0 "${B[@]}" -o "$TMP/part.jsonl" "$TREE"
expect_err "torn line reported" "removed an incomplete last record"
same_records "torn line cut" jsonl "$TMP/part.jsonl" jsonl "$TMP/base.jsonl"
echo 'this is not json' >"$TMP/garbage.jsonl"
run "not our file" 2 "${B[@]}" -q -o "$TMP/garbage.jsonl" "$TREE"
expect_err "not our file" "garbage.jsonl:1: not an xcap batch record"
if command -v flock >/dev/null; then
    : >"$TMP/locked.jsonl"
    flock "$TMP/locked.jsonl" sleep 3 &
    sleep 0.5
    run "two runs on one file" 2 "${B[@]}" -q -o "$TMP/locked.jsonl" "$TREE"
    expect_err "locked" "another xcap batch is writing it"
    wait
fi

# --- kill -9 at several points, then resume: the same records, none lost, none doubled ---
# kill_resume NAME FORMAT PARTIAL N...: each run is killed after N more records (PARTIAL=1: the
# N-th is half written); a last run finishes the job.
kill_resume() {
    local name=$1 fmt=$2 partial=$3 out=$TMP/kill.$2
    shift 3
    rm -f "$out"
    for n in "$@"; do
        # in a subshell that waits, so that bash's "Killed" notice goes to /dev/null too
        (XCAP_TEST_KILL_AFTER=$n XCAP_TEST_KILL_PARTIAL=$partial "${B[@]}" -q --format "$fmt" -o "$out" "$TREE"
            exit $?) 2>/dev/null
        local rc=$?
        if [ "$rc" -eq 137 ]; then ok; else fail "$name: killed run exited $rc"; fi
    done
    "${B[@]}" -q --format "$fmt" -o "$out" "$TREE" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" -le 1 ]; then ok; else fail "$name: resumed run exited $rc: $(cat "$TMP/err")"; fi
    py "$name: records" check "$fmt" "$out" "$EXPECT"
    same_records "$name" "$fmt" "$out" jsonl "$TMP/base.jsonl"
}
kill_resume "kill after records" jsonl 0 1 4 9
kill_resume "kill mid-record" jsonl 1 1 6 3 10
kill_resume "csv kill after records" csv 0 2 7
kill_resume "csv kill mid-record" csv 1 1 5 8

# a real kill -9 while a run is going (more work per image, so there is time to land it)
"${B[@]}" -q --beams 3 -o "$TMP/slow_base.jsonl" "$TREE" 2>/dev/null
rm -f "$TMP/real.jsonl"
landed=0
for at in 2 9 17; do
    "${B[@]}" -q --beams 3 -t 1 -o "$TMP/real.jsonl" "$TREE" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 1000); do
        [ -f "$TMP/real.jsonl" ] && [ "$(wc -l <"$TMP/real.jsonl")" -ge "$at" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    kill -9 "$pid" 2>/dev/null && landed=$((landed + 1))
    wait "$pid" 2>/dev/null
done 2>/dev/null
"${B[@]}" -q --beams 3 -o "$TMP/real.jsonl" "$TREE" 2>/dev/null
py "real kill -9 records" check jsonl "$TMP/real.jsonl" "$EXPECT"
same_records "real kill -9 then resume" jsonl "$TMP/real.jsonl" jsonl "$TMP/slow_base.jsonl"
[ "$landed" -gt 0 ] || echo "note: test_batch: every real kill came after its run had finished" >&2

# --- sidecars: beside the images (in a copy of the tree) and under --out-dir ---
cp -a "$TREE" "$TMP/side"
"$PY" -c 'import json,sys,base64; e=json.load(open(sys.argv[1])); t=sys.argv[2].encode(); s=sys.argv[3].encode()
r=lambda k: base64.b64encode(s+base64.b64decode(k)[len(t):]).decode()
json.dump({"good":[r(k) for k in e["good"]],"bad":[r(k) for k in e["bad"]]},open(sys.argv[4],"w"))' \
    "$EXPECT" "$TREE" "$TMP/side" "$TMP/side_expect.json"
run "txt beside" 1 "${B[@]}" -q --format txt "$TMP/side"
"${B[@]}" -q -o "$TMP/side.jsonl" "$TMP/side" 2>/dev/null
py "sidecars beside" sidecars "$TMP/side.jsonl" "$TMP/side" -
check test -s "$TMP/side/same.png.txt"
check test -s "$TMP/side/same.jpg.txt"
run "txt rerun retries only the failed" 1 "${B[@]}" --format txt "$TMP/side"
expect_err "txt rerun" "0 captioned, $((n_images - 9)) skipped, 9 failed"
run "txt out-dir" 1 "${B[@]}" -q --format txt --out-dir "$TMP/caps" "$TREE"
py "sidecars under out-dir" sidecars "$TMP/base.jsonl" "$TREE" "$TMP/caps"
rm -rf "$TMP/caps"
# the first image in path order (UPPER.PNG) is a good one: killed between write and rename
(XCAP_TEST_KILL_AFTER=1 XCAP_TEST_KILL_PARTIAL=1 "${B[@]}" -q --format txt --out-dir "$TMP/caps" "$TREE"
    exit $?) 2>/dev/null
check test "$?" -eq 137
check test -n "$(find "$TMP/caps" -name '*.xcap-tmp')"
(XCAP_TEST_KILL_AFTER=5 "${B[@]}" -q --format txt --out-dir "$TMP/caps" "$TREE"; exit $?) 2>/dev/null
check test "$?" -eq 137
run "txt resume" 1 "${B[@]}" -q --format txt --out-dir "$TMP/caps" "$TREE"
py "sidecars after kills" sidecars "$TMP/base.jsonl" "$TREE" "$TMP/caps"

# --- shards: their union is exactly one run ---
for k in 1 2 3; do
    run "shard $k/3" 1 "${B[@]}" -q --shard "$k/3" -o "$TMP/shard$k.jsonl" "$TREE"
done
cat "$TMP/shard1.jsonl" "$TMP/shard2.jsonl" "$TMP/shard3.jsonl" >"$TMP/shards.jsonl"
same_records "shards == one run" jsonl "$TMP/shards.jsonl" jsonl "$TMP/base.jsonl"
sizes=$(wc -l <"$TMP/shard1.jsonl")/$(wc -l <"$TMP/shard2.jsonl")/$(wc -l <"$TMP/shard3.jsonl")
check test "$("$PY" -c 'import sys; s=[int(x) for x in sys.argv[1].split("/")]; print(max(s)-min(s))' "$sizes")" -le 1
printf '%s\n' 1 2 3 | xargs -P 3 -I {} "${B[@]}" -q --shard {}/3 -o "$TMP/xargs.{}.jsonl" "$TREE" 2>/dev/null
cat "$TMP"/xargs.*.jsonl >"$TMP/xargs.jsonl"
same_records "xargs -P shards" jsonl "$TMP/xargs.jsonl" jsonl "$TMP/base.jsonl"
if command -v parallel >/dev/null; then
    parallel --will-cite -q "${B[@]}" -q --shard {}/3 -o "$TMP/par.{}.jsonl" "$TREE" ::: 1 2 3 2>/dev/null
    cat "$TMP"/par.*.jsonl >"$TMP/par.jsonl"
    same_records "GNU parallel shards" jsonl "$TMP/par.jsonl" jsonl "$TMP/base.jsonl"
elif [ -n "${CI:-}" ]; then
    fail "GNU parallel is not installed, and CI must run its shard case (apt-get install parallel)"
else
    echo "note: test_batch: GNU parallel is not installed (apt-get install parallel); its case skipped" >&2
fi
run "csv shards" 1 "${B[@]}" -q --format csv --shard 2/3 -o "$TMP/shard2.csv" "$TREE"
same_records "csv shard == jsonl shard" csv "$TMP/shard2.csv" jsonl "$TMP/shard2.jsonl"

# --- include / exclude ---
run "--include" 0 "${B[@]}" -q --include '*.GIF' --include 'nested/*.tga' "$TREE"
check test "$(wc -l <"$TMP/out")" -eq 2
run "--exclude prunes folders" 1 "${B[@]}" -q --exclude many --exclude '*.png' "$TREE"
check test "$(grep -c '\.png"' "$TMP/out")" -eq 0
check test "$(grep -c '"path":"[^"]*many/' "$TMP/out")" -eq 0
check grep -q 'photo.JPG' "$TMP/out"
run "--include a non-image type" 1 "${B[@]}" -q --include '*.webp' --include '*.txt' "$TREE/bad"
check grep -q '"error":"[^"]*webp.webp' "$TMP/out"

# --- the gallery ---
run "--html" 1 "${B[@]}" -q --html "$TMP/gallery" --html-page-size 10 -o "$TMP/g.jsonl" "$TREE"
py "gallery" gallery "$TMP/gallery" "$EXPECT" 10
rm -rf "$TMP/gallery"
run "--html after a run without it" 0 "${B[@]}" -q --html "$TMP/gallery" --html-page-size 7 -o "$TMP/g.jsonl" "$TREE"
py "gallery from earlier records" gallery "$TMP/gallery" "$EXPECT" 7
run "--html inside the tree is not walked" 1 "${B[@]}" -q --html "$TMP/side/gallery" "$TMP/side"
check test "$(wc -l <"$TMP/out")" -eq "$n_images"

# --- progress ---
run "plain progress lines" 1 "${B[@]}" --progress-interval 0 "$TREE"
check test "$(grep -c '^xcap batch: [0-9]*/[0-9]* ([0-9]*%), .* images/s, ETA' "$TMP/err")" -ge "$n_images"
if script -qec true /dev/null >/dev/null 2>&1; then
    script -qec "$(printf '%q ' "${B[@]}") $(printf '%q' "$TREE/many") >/dev/null" "$TMP/tty.log" >/dev/null 2>&1
    check grep -q $'\r.*\\[#*\\.*\\] [0-9]*/[0-9]* .*images/s  ETA' "$TMP/tty.log"
fi

# --- usage errors: exit 2; the model: exit 3 ---
run "no path" 2 "${B[@]}"
run "--help" 0 "$XCAP" batch --help
for flag in --include --exclude --shard --format --output --out-dir --skip-existing --overwrite --html \
    --jobs --decode-threads --batch-size --quiet --progress-interval --beams "Exit codes"; do
    if grep -q -- "$flag" "$TMP/out"; then ok; else fail "batch --help lacks $flag"; fi
done
for bad in "--shard 0/3" "--shard 4/3" "--shard 1" "--shard x/y" "--format xml" "--jobs 0" "--batch-size 0" \
    "--decode-threads x" "--html-page-size 0" "--progress-interval -1" "--frobnicate" "-j 2 -t 2" "--beams 0" \
    "--format txt -o $TMP/x" "--out-dir $TMP/x" "--json --format csv" "-"; do
    # shellcheck disable=SC2086
    run "usage $bad" 2 "${B[@]}" $bad "$TREE"
    if [ -s "$TMP/err" ]; then ok; else fail "usage $bad: no message"; fi
done
mkdir -p "$TMP/collide/one" "$TMP/collide/two"
cp tests/fixtures/images/tiny_5x3.png "$TMP/collide/one/a.png"
cp tests/fixtures/images/tiny_5x3.png "$TMP/collide/two/a.png"
run "out-dir collision" 2 "${B[@]}" --format txt --out-dir "$TMP/x" "$TMP/collide/one" "$TMP/collide/two"
expect_err "out-dir collision" "would both write"
run "missing model" 3 "$XCAP" batch -m "$TMP/nowhere" "$TREE"
expect_err "missing model" "$TMP/nowhere"
run "missing path" 1 "${B[@]}" -q "$TMP/nothing-here"
check grep -q "\"error\":\"$TMP/nothing-here: No such file" "$TMP/out"
if [ "$(id -u)" -ne 0 ]; then # root reads any file: this case needs an ordinary user
    mkdir -p "$TMP/locked"
    cp tests/fixtures/images/tiny_5x3.png "$TMP/locked/secret.png"
    chmod 000 "$TMP/locked/secret.png"
    run "unreadable file" 1 "${B[@]}" -q "$TMP/locked"
    check grep -q "\"error\":\"$TMP/locked/secret.png: .*ermission denied" "$TMP/out"
    mkdir -p "$TMP/locked/closed" && chmod 000 "$TMP/locked/closed"
    run "unlistable folder" 1 "${B[@]}" "$TMP/locked/closed"
    expect_err "unlistable folder" "cannot list $TMP/locked/closed"
    chmod 755 "$TMP/locked/closed"
fi
mkdir -p "$TMP/empty"
run "empty folder" 0 "${B[@]}" "$TMP/empty"
expect_err "empty folder" "no image files found"
if [ -w /dev/full ]; then
    run "output write failure" 1 "${B[@]}" -q -o /dev/full "$TREE/many"
    expect_err "output write failure" "cannot write /dev/full"
fi

echo "test_batch: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
