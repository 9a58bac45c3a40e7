#!/usr/bin/env bash
# xcap quantize: f16 and q8 copies of the fixture models hold exactly the documented values
# (checked from the raw safetensors bytes with Python's standard library), load and caption;
# a q8 model captions as the PyTorch reference does with xcap's q8 arithmetic
# (tests/fixtures/goldens/q8_captions.json, from weights/reference/make_q8_goldens.py, which
# quantises the float checkpoints itself: this catches a wrong output axis or a mislaid scale);
# bad uses get exit 2 or 3 and a message.
# Usage: test_quantize.sh PATH/TO/xcap
set -u
XCAP=$1
PY=/usr/bin/python3
TMP=$(mktemp -d /tmp/xcap_quant.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "$0")/shell_harness.sh"

cat >"$TMP/check.py" <<'PYEOF'
import json, math, struct, sys

def read(path):
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    meta = head.pop('__metadata__', {})
    body = raw[8 + n:]
    out = {}
    for name, t in head.items():
        a, b = t['data_offsets']
        out[name] = (t['dtype'], t['shape'], body[a:b])
    return meta, out

def values(dtype, data):
    if dtype == 'F32': return list(struct.unpack('<%df' % (len(data) // 4), data))
    if dtype == 'F16': return list(struct.unpack('<%de' % (len(data) // 2), data))
    if dtype == 'BF16':
        return [struct.unpack('<f', b'\0\0' + data[i:i + 2])[0] for i in range(0, len(data), 2)]
    if dtype == 'I8': return list(struct.unpack('<%db' % len(data), data))
    raise SystemExit('dtype ' + dtype)

def f32(x): return struct.unpack('<f', struct.pack('<f', x))[0]

def half(x): return struct.unpack('<e', struct.pack('<e', x))[0]

CONV1D = ('.attn.c_attn.weight', '.attn.c_proj.weight', '.crossattention.q_attn.weight',
          '.crossattention.c_attn.weight', '.crossattention.c_proj.weight', '.mlp.c_fc.weight', '.mlp.c_proj.weight')
LINEAR = ('.query.weight', '.key.weight', '.value.weight', '.attention.output.dense.weight',
          '.intermediate.dense.weight', '.output.dense.weight')

def layout(name, tied):
    if name.startswith('decoder.transformer.h.') and name.endswith(CONV1D): return 'kn'
    if name.startswith('encoder.encoder.layer.') and name.endswith(LINEAR): return 'nk'
    if name in ('encoder.embeddings.patch_embeddings.projection.weight', 'enc_to_dec_proj.weight',
                'decoder.lm_head.weight'): return 'nk'
    if name == 'decoder.transformer.wte.weight' and tied: return 'nk'
    return None

def check(src_dir, out_dir, kind):
    tied = json.load(open(src_dir + '/config.json')).get('tie_word_embeddings', True)
    _, src = read(src_dir + '/model.safetensors')
    meta, out = read(out_dir + '/model.safetensors')
    problems = []
    if meta.get('xcap_quantization') != kind: problems.append('metadata %r' % meta)
    expected = dict(src)
    if tied and 'decoder.transformer.wte.weight' in src: expected.pop('decoder.lm_head.weight', None)
    for name, (dtype, shape, data) in expected.items():
        v = values(dtype, data)
        if kind == 'f16':
            got = out.get(name)
            if not got or got[0] != 'F16' or got[1] != shape: problems.append(name + ': not F16 ' + repr(shape)); continue
            if values('F16', got[2]) != [half(x) for x in v]: problems.append(name + ': values')
            continue
        lay = layout(name, tied)
        got = out.get(name)
        if lay is None:
            if not got or got[0] != 'F32' or values('F32', got[2]) != [f32(x) for x in v]: problems.append(name + ': float32 copy')
            continue
        sc = out.get(name + '_scale')
        if not got or got[0] != 'I8' or got[1] != shape or not sc: problems.append(name + ': not I8 + scale'); continue
        rows = shape[0]; cols = len(v) // rows
        n = rows if lay == 'nk' else cols
        scales, q = values('F32', sc[2]), values('I8', got[2])
        if sc[1] != [n]: problems.append(name + ': scale shape %r, expected [%d]' % (sc[1], n)); continue
        for c in range(n):
            col = [v[c * cols + i] for i in range(cols)] if lay == 'nk' else [v[i * cols + c] for i in range(rows)]
            qs = [q[c * cols + i] for i in range(cols)] if lay == 'nk' else [q[i * cols + c] for i in range(rows)]
            s = f32(f32(max(abs(x) for x in col)) / 127.0)
            if scales[c] != s: problems.append('%s: channel %d scale %r, expected %r' % (name, c, scales[c], s)); break
            want = [max(-127, min(127, round(f32(x / s)))) if s > 0 else 0 for x in col]
            if sum(a != b for a, b in zip(qs, want)) > 0: problems.append('%s: channel %d int8 values' % (name, c)); break
    extra = set(out) - set(expected) - {k + '_scale' for k in expected}
    if extra: problems.append('unexpected tensors %r' % sorted(extra))
    if problems: raise SystemExit('\n'.join(problems[:10]))

def golden_captions(model, got_path):
    """Same tokens as the reference's q8 captions, and sum_logprob within 5e-4 per token: given
    the same input a q8 layer computes the reference's result, but a last-bit difference
    upstream can round a 16-bit activation, or a cross-attention key or value kept in half
    precision, to its neighbour (see tests/test_forward.c); measured here at most 2.3e-4 per
    token."""
    want = json.load(open('tests/fixtures/goldens/q8_captions.json'))['models'][model]
    got = [json.loads(l) for l in open(got_path)]
    if len(got) != len(want): raise SystemExit('%d records, expected %d' % (len(got), len(want)))
    for g, w in zip(got, want):
        if g['file'] != w['file'] or g['tokens'] != w['tokens']:
            raise SystemExit('%s: tokens %r, reference %r' % (g['file'], g['tokens'], w['tokens']))
        if abs(g['sum_logprob'] - w['sum_logprob']) > 5e-4 * max(1, len(w['tokens'])):
            raise SystemExit('%s: sum_logprob %r, reference %r' % (g['file'], g['sum_logprob'], w['sum_logprob']))

globals()[sys.argv[1]](*sys.argv[2:])
PYEOF
py() { local name=$1; shift; if "$PY" "$TMP/check.py" "$@" 2>"$TMP/pyerr"; then ok; else fail "$name: $(head -c 600 "$TMP/pyerr")"; fi; }

IMGS=(tests/fixtures/images/{circles_200x150,gradient_32x32,noise_17x23,stripes_100x37}.png)
for m in tiny tiny-lmhead tiny-bf16 wide gpt2vocab; do
    for t in f16 q8; do
        out=$TMP/$m-$t
        run "$m $t" 0 "$XCAP" quantize "tests/fixtures/models/$m" "$out" --type "$t"
        py "$m $t values" check "tests/fixtures/models/$m" "$out" "$t"
        run "$m $t captions" 0 "$XCAP" caption -m "$out" --json "${IMGS[@]}"
        cp "$TMP/out" "$TMP/$m-$t.jsonl"
    done
    py "$m q8 captions = the reference's" golden_captions "$m" "$TMP/$m-q8.jsonl"
done

# f16 of a model keeps half weights in memory but computes the same products: its captions
# equal those of the float32 model made from the same half values.
run "f16 twice is stable" 0 "$XCAP" quantize "$TMP/tiny-f16" "$TMP/tiny-f16-again" --type f16
cmp -s "$TMP/tiny-f16/model.safetensors" "$TMP/tiny-f16-again/model.safetensors" && ok || fail "f16 of f16 differs"

# --- bad uses ---
run "already quantised" 3 "$XCAP" quantize "$TMP/tiny-q8" "$TMP/qq" --type q8
expect_err "already quantised" "already quantised"
run "into itself" 3 "$XCAP" quantize tests/fixtures/models/tiny tests/fixtures/models/tiny --type f16
expect_err "into itself" "the output directory is the input directory"
run "no model" 3 "$XCAP" quantize "$TMP/none" "$TMP/x" --type q8
expect_err "no model" "config.json"
run "bad type" 2 "$XCAP" quantize tests/fixtures/models/tiny "$TMP/x" --type q4
expect_err "bad type" "expected f16 or q8"
run "no type" 2 "$XCAP" quantize tests/fixtures/models/tiny "$TMP/x"
run "one dir" 2 "$XCAP" quantize tests/fixtures/models/tiny --type f16
run "help" 0 "$XCAP" quantize --help
# A q8 model whose scale tensor was removed is refused by the loader, naming both tensors.
mkdir -p "$TMP/noscale" && cp "$TMP/tiny-q8"/*.json "$TMP/tiny-q8"/merges.txt "$TMP/noscale/"
"$PY" - "$TMP/tiny-q8/model.safetensors" "$TMP/noscale/model.safetensors" <<'PYEOF'
import json, struct, sys
raw = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]
head = json.loads(raw[8:8 + n]); body = raw[8 + n:]
victim = 'decoder.transformer.h.0.mlp.c_fc.weight_scale'
keep = [(k, v) for k, v in head.items() if k != victim and k != '__metadata__']
out, data, off = {}, b'', 0
for k, v in sorted(keep, key=lambda kv: kv[1]['data_offsets'][0]):
    a, b = v['data_offsets']; out[k] = dict(v, data_offsets=[off, off + b - a]); data += body[a:b]; off += b - a
h = json.dumps(out).encode(); h += b' ' * (-len(h) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(h)) + h + data)
PYEOF
run "missing scale refused" 3 "$XCAP" caption -m "$TMP/noscale" tests/fixtures/images/gradient_32x32.png
expect_err "missing scale named" "decoder.transformer.h.0.mlp.c_fc.weight is I8 but decoder.transformer.h.0.mlp.c_fc.weight_scale"

finish test_quantize
