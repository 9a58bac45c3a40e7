#!/usr/bin/env node
// ONNX Runtime's side of the benchmark (bench/run.sh), on the graphs that bench/prepare.py
// exports from the PyTorch reference: encoder, cross K/V, and one decoder step with its
// self-attention cache. Prints one JSON object with the same stage names as xcap_stages.
//
//   node bench/ort_stages.js ONNX_DIR THREADS [SECONDS] [MIN_REPS] [--rss-only]
//
// Stages: load (the three sessions), encoder, cross_kv, decoder_token (one position for one
// sequence, averaged over positions 0..15), greedy16 (encoder + cross K/V + 16 greedy steps with
// eos banned, as min_new_tokens = max_new_tokens = 16 does), and batch (images/s over every image
// of pixels.bin, 8 per encoder pass, their greedy steps in lock step). Preprocessing is not
// ONNX Runtime's: pixels.bin holds the reference's pixel values, so greedy16 and batch start from
// pixels. There is no beam search here. --rss-only loads and captions the first image once.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const CAPTION_TOKENS = 16;
const BATCH = 8;

function now() {
  return Number(process.hrtime.bigint()) * 1e-9;
}

async function loadSessions(dir, threads) {
  const options = {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  };
  const open = (name) => ort.InferenceSession.create(path.join(dir, name), options);
  return {
    encoder: await open('encoder.onnx'),
    crossKV: await open('cross_kv.onnx'),
    step: await open('decoder_step.onnx'),
  };
}

async function releaseSessions(s) {
  for (const session of Object.values(s)) await session.release();
}

function emptyCache(meta, rows) {
  return new ort.Tensor('float32', new Float32Array(0), [meta.layers, rows, meta.heads, 0, meta.head_dim]);
}

// The decoder over `tokens[pos]` (one array of row tokens per position) from position 0;
// `choose(logits, pos)` may replace the next position's tokens (greedy). Returns the last logits.
async function decode(s, meta, cross, rows, tokens, choose) {
  let pastK = emptyCache(meta, rows);
  let pastV = emptyCache(meta, rows);
  let out;
  for (let pos = 0; pos < CAPTION_TOKENS; pos++) {
    out = await s.step.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens[pos], BigInt), [rows, 1]),
      position: new ort.Tensor('int64', BigInt64Array.of(BigInt(pos)), [1]),
      past_k: pastK,
      past_v: pastV,
      cross_k: cross.cross_k,
      cross_v: cross.cross_v,
    });
    pastK = out.present_k;
    pastV = out.present_v;
    if (choose) choose(out.logits.data, pos);
  }
  return out.logits;
}

// Greedy captions of `rows` images (pixels [rows, 3, S, S]): exactly CAPTION_TOKENS tokens each.
async function greedy(s, meta, pixels, rows) {
  const S = meta.image_size;
  const enc = await s.encoder.run({ pixel_values: new ort.Tensor('float32', pixels, [rows, 3, S, S]) });
  const cross = await s.crossKV.run({ memory: enc.memory });
  const tokens = [new Array(rows).fill(meta.start_token)];
  const V = meta.vocab_size;
  await decode(s, meta, cross, rows, tokens, (logits, pos) => {
    const next = [];
    for (let r = 0; r < rows; r++) {
      let best = -1;
      for (let v = 0; v < V; v++) {
        if (meta.eos_token.includes(v)) continue; // eos banned before 16 new tokens
        if (best < 0 || logits[r * V + v] > logits[r * V + best]) best = v;
      }
      next.push(best);
    }
    tokens[pos + 1] = next;
  });
  return tokens.slice(1).map((row) => row[0]);
}

async function timeStage(fn, seconds, minReps, per) {
  await fn();
  const t = [];
  const start = now();
  while (t.length < minReps || now() - start < seconds) {
    const t0 = now();
    await fn();
    t.push((now() - t0) / per);
  }
  t.sort((a, b) => a - b);
  const n = t.length;
  const median = n % 2 ? t[(n - 1) / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  return { median_s: median, min_s: t[0], reps: n };
}

async function main() {
  const args = process.argv.slice(2).filter((a) => a !== '--rss-only');
  const rssOnly = process.argv.includes('--rss-only');
  if (args.length < 2) {
    console.error('usage: node bench/ort_stages.js ONNX_DIR THREADS [SECONDS] [MIN_REPS] [--rss-only]');
    process.exit(2);
  }
  const [dir, threadsArg, secondsArg, repsArg] = args;
  const threads = Number(threadsArg);
  const seconds = secondsArg ? Number(secondsArg) : 2;
  const minReps = repsArg ? Number(repsArg) : 5;
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
  const buf = fs.readFileSync(path.join(dir, 'pixels.bin'));
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const imageLen = 3 * meta.image_size * meta.image_size;
  const nImages = all.length / imageLen;
  const first = all.slice(0, imageLen);

  let s = await loadSessions(dir, threads);
  if (rssOnly) {
    await greedy(s, meta, first, 1);
    return;
  }
  const stages = {};
  stages.load = await timeStage(
    async () => {
      await releaseSessions(s);
      s = await loadSessions(dir, threads);
    },
    seconds,
    minReps,
    1,
  );
  const S = meta.image_size;
  const pixels = new ort.Tensor('float32', first, [1, 3, S, S]);
  let enc;
  stages.encoder = await timeStage(
    async () => {
      enc = await s.encoder.run({ pixel_values: pixels });
    },
    seconds,
    minReps,
    1,
  );
  let cross;
  stages.cross_kv = await timeStage(
    async () => {
      cross = await s.crossKV.run({ memory: enc.memory });
    },
    seconds,
    minReps,
    1,
  );
  let caption;
  stages.greedy16 = await timeStage(
    async () => {
      caption = await greedy(s, meta, first, 1);
    },
    seconds,
    minReps,
    1,
  );
  const fed = [meta.start_token, ...caption.slice(0, CAPTION_TOKENS - 1)].map((t) => [t]);
  stages.decoder_token = await timeStage(() => decode(s, meta, cross, 1, fed, null), seconds, minReps, CAPTION_TOKENS);
  const t0 = now();
  for (let i = 0; i < nImages; i += BATCH) {
    const rows = Math.min(BATCH, nImages - i);
    await greedy(s, meta, all.subarray(i * imageLen, (i + rows) * imageLen), rows);
  }
  const batch = { images: nImages, images_per_s: nImages / (now() - t0), batch_size: BATCH };
  console.log(JSON.stringify({ engine: 'onnxruntime', threads, version: ort.env.versions.common, stages, batch,
    greedy_tokens: caption }));
}

main().catch((e) => {
  console.error(`ort_stages: ${e.stack || e}`);
  process.exit(1);
});
