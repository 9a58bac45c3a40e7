#!/usr/bin/env node
/* Writes the tokenizer test fixtures under tests/fixtures/tokenizer/ from encoders that are not
 * xcap's (development time only; the C test reads the JSON, never runs this):
 *
 *   cases.json   strings (as hex UTF-8, plus readable text) and their GPT-2 ids; decode cases
 *                (ids -> expected text with U+FFFD replacement, special tokens kept/skipped);
 *                encode-with-special cases.
 *   small/       a 500-merge cut of GPT-2 as vocab.json + merges.txt + config files
 *   small_json/  the same tokenizer as tokenizer.json with merges as "a b" strings
 *   small_pairs/ the same as tokenizer.json with merges as ["a", "b"] pairs
 *
 * Oracles for the ids:
 *   A. js-tiktoken r50k_base (GPT-2's ranks, its own BPE and JavaScript's regex engine);
 *   B. gpt-3-encoder encode() (OpenAI's original merges-based BPE, ported);
 *   C. "reference split": the GPT-2 pattern run by JavaScript's regex engine with \s spelled out
 *      as the Unicode White_Space set, each piece BPE'd by gpt-3-encoder's own bpe().
 * JavaScript's \s is not White_Space (it has U+FEFF and lacks U+0085); tiktoken (Rust regex) and
 * HF tokenizers use White_Space, and so does xcap. A and B are the expected ids wherever they
 * apply; C must agree with them there (checked here), and is the only oracle for strings with
 * U+0085/U+FEFF and for byte strings that are not UTF-8 (JS strings cannot hold those). For the
 * latter every byte that does not start a well-formed UTF-8 sequence is a character of the
 * "other" class (xcap's documented rule); C models it by mapping such a byte b to the private-use
 * code point U+F0000 + b (category Co, "other") before splitting, and back to b after. Which
 * byte sequences are well-formed is decided with Node's own strict TextDecoder.
 *
 * Run from the repository root:  node weights/tools/gen_tokenizer_cases.cjs [node_modules dir]
 * (default /tmp/npmfx/node_modules, holding js-tiktoken, gpt-3-encoder, emoji-datasource-google). */
'use strict';
const fs = require('fs');
const path = require('path');

const modules = process.argv[2] || '/tmp/npmfx/node_modules';
const { getEncoding } = require(path.join(modules, 'js-tiktoken'));
const gpt3 = require(path.join(modules, 'gpt-3-encoder'));
const emojiData = require(path.join(modules, 'emoji-datasource-google', 'emoji.json'));
const tiktoken = getEncoding('r50k_base');

// gpt-3-encoder keeps bpe() and its tables private: evaluate its source with them exported.
const gpt3Dir = path.join(modules, 'gpt-3-encoder');
const gpt3Src = fs.readFileSync(path.join(gpt3Dir, 'Encoder.js'), 'utf8') +
  '\nmodule.exports = { bpe, encoder, decoder, byte_encoder, byte_decoder, bpe_merges };\n';
const gpt3In = { exports: {} };
new Function('require', 'module', 'exports', '__dirname', gpt3Src)(require, gpt3In, gpt3In.exports, gpt3Dir);
const G = gpt3In.exports;

// ----------------------------------------------------------------------------------------------
// Helpers

let seed = 20240611;
function rand() { // mulberry32: fixed seed, so the fixture is reproducible
  seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (arr) => arr[Math.floor(rand() * arr.length)];
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const utf8 = (s) => Array.from(Buffer.from(s, 'utf8'));

const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lossy = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

// Bytes -> JS string where each byte that does not start well-formed UTF-8 becomes U+F0000+b.
function bytesToMarked(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length;) {
    let done = false;
    for (let k = 1; k <= 4 && i + k <= bytes.length && !done; k++) {
      try {
        const s = strict.decode(Uint8Array.from(bytes.slice(i, i + k)));
        if ([...s].length === 1) { out += s; i += k; done = true; }
      } catch (e) { /* not (yet) a whole sequence */ }
    }
    if (!done) { out += String.fromCodePoint(0xF0000 + bytes[i]); i += 1; }
  }
  return out;
}
function markedToBytes(s) {
  const out = [];
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    if (cp >= 0xF0000 && cp <= 0xF00FF) out.push(cp - 0xF0000);
    else out.push(...utf8(ch));
  }
  return out;
}

const WS = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const refPattern = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`, 'gu');

function refEncode(bytes) { // oracle C
  const ids = [];
  for (const m of bytesToMarked(bytes).matchAll(refPattern)) {
    const mapped = markedToBytes(m[0]).map((b) => G.byte_encoder[b]).join('');
    for (const tok of G.bpe(mapped).split(' ')) ids.push(G.encoder[tok]);
  }
  return ids;
}
function tokenBytes(id) {
  return [...G.decoder[id]].map((c) => Number(G.byte_decoder[c]));
}
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// ----------------------------------------------------------------------------------------------
// The strings

const groups = [];
function group(name, strings) { groups.push([name, strings]); }

group('english', [
  'Hello world', 'Hello, world!', ' Hello world', 'The quick brown fox jumps over the lazy dog.',
  'a man riding a wave on top of a surfboard', 'a cat sitting on a couch next to a remote',
  'A group of people standing around a table with food.', 'two dogs playing in the snow ',
  'GPT-2 is a large transformer-based language model.', 'This is a test. This is only a test.',
  'What time is it? It\'s 5 o\'clock.', 'Mr. Smith went to Washington D.C. in 1999.',
  'e-mail: someone@example.com', 'https://huggingface.co/nlpconnect/vit-gpt2-image-captioning',
  'C:\\Program Files\\xcap\\xcap.exe --beams 4', 'int main(void) { return 0; }',
  'snake_case and camelCase and SCREAMING_CASE', 'TITLE CASE HEADLINE HERE',
  'the the the the the', 'a', 'I', 'an apple a day', 'Once upon a time, there was a tokenizer.',
  'Shakespeare wrote: "To be, or not to be: that is the question."', 'newline at end\n',
  'tab\tseparated\tvalues', 'mixedCASEwordsWITHcaps', '¿Dónde está la biblioteca?',
  'Ünïcödé äccents in Gërmän wörds', 'He said—quietly—that it was “fine”…',
]);
group('punctuation', [
  '!', '?!', '...', '!!!???', '(a)', '[1, 2, 3]', '{"key": "value"}', '<html><body></body></html>',
  '#hashtag @mention $100 %50 ^caret &amp *star', '~`|\\/', ';:,.', '--', '->', '=>', '!=', '<=>',
  '«guillemets»', '„low quotes“', '、。！？', '¡¿', '§¶†‡•', '© ® ™', ' .', ' ,', 'end .', 'a , b',
]);
group('numbers', [
  '0', '123', '1234567890', '3.14159', '1,000,000', '2024-06-11', ' 42', 'x2', 'abc123def',
  '١٢٣٤', '१२३', '½ ¼ ¾', 'Ⅻ Ⅳ', 'x² + y³', '①②③', '٣٤.٥', '0x1F600', '1e-10', '-273.15°C',
  '99 bottles', '𝟙𝟚𝟛',
]);
group('contractions', [
  "I'll", "don't", "'S", "'s", "we're", "they've", "I'm", "he'd", "it's", "'", "''", "'re'",
  "rock'n'roll", "O'Neil", "y'all", "DON'T", "I'LL", "'ll've", " 's", "''s", "x's", "'t", "'d",
  "'m'm", "can't won't shouldn't", "'ve got", "dogs' toys", "'Tis", "'twas", "' s", "'x",
  "it’s (curly apostrophe)",
]);
group('whitespace', [
  ' ', '  ', '   ', '   a', '  a', 'a  ', 'a   b', 'a\tb', 'a\n\nb', '\n', '\r\n', '\n\n\n',
  ' \t a', 'trailing spaces   ', '\t\t', 'a \n b', ' \n\n a', '  \n  ', 'a\u00a0b', '\u00a0a',
  '\u3000x', 'x\u3000\u3000y', 'a\u2003b', 'x\u2028y', 'x\u2029y', 'a\u000bb\u000cc', '\t x',
  ' x ', '\n x', 'a\r\rb', '\u1680z', 'k\u202fl\u205fm', '        indented code', 'x \u00a0 y',
]);
group('devanagari', [
  'नमस्ते', 'हिन्दी भाषा', 'क्षत्रिय', 'स्वागत है', 'संस्कृतम्', 'ज़िंदगी', 'प्रेम', 'कृपया',
  'भारत का संविधान', 'मैं ठीक हूँ।', 'ॐ', 'ऋषि', 'अंग्रेज़ी', 'हिंदी123', 'दुःख',
]);
group('cjk', [
  '你好，世界', '日本語のテキスト', '한국어 텍스트', '中文123abc', '漢字かなカナ', '我爱北京天安门',
  'これはペンです。', '東京都', '𠀀𠀁𪚥', '中 文', 'ｶﾀｶﾅ', 'ＡＢＣ１２３', '〇一二三', '가나다라마바사',
  'ㄱㄴㄷ', '「引用」『書名』', 'ー〜ー', '、', '你好 hello 世界 world',
]);
group('emoji', [
  '😀', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '❤️', '🇺🇸🇯🇵', 'hello 🌍!', '👩🏾‍💻', '🤷‍♀️', '🧑🏻‍🤝‍🧑🏿',
  '😀😃😄', ' 😀', '😀 ', '1️⃣', '#️⃣', '👋🏻👋🏼👋🏽👋🏾👋🏿', '©️', '☺', '🫠', '🏴󠁧󠁢󠁳󠁣󠁴󠁿',
]);
// A spread of the emoji set (every 60th entry, with its first skin tone when it has them).
for (let i = 0; i < emojiData.length; i += 60) {
  const e = emojiData[i];
  const s = String.fromCodePoint(...e.unified.split('-').map((h) => parseInt(h, 16)));
  const out = [s, `I like ${s}!`];
  if (e.skin_variations) {
    const v = Object.values(e.skin_variations)[0];
    out.push(String.fromCodePoint(...v.unified.split('-').map((h) => parseInt(h, 16))));
  }
  group('emoji-data', out);
}
group('mixed', [
  'Hello мир 你好 مرحبا שלום', 'Ελληνικά and русский', 'naïve café résumé', 'Straße', 'e\u0301',
  'cafe\u0301 au lait', 'ﬁle ﬂow', 'ÅÆØ åæø', 'Tiếng Việt có dấu', 'ภาษาไทย', 'ქართული', 'Հայերեն',
  'עִבְרִית', 'العربية‎', 'a\u200bb', 'soft\u00adhyphen', 'zero\u200dwidth\u200cjoin', 'ᚠᛇᚻ',
  'Ⓐⓑⓒ', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', 'x\u0000y', '\u0001\u0002', 'del\u007f', 'tab\u0009', '<|endoftext|>',
  'a<|endoftext|>b', '<|endoftext|> <|endoftext|>', '<|', '|>', '\u{10FFFF}', '\u{E000}',
  '\uFFFD', 'ℌ𝔢𝔩𝔩𝔬', 'Ω≈ç√∫', '∀x∈ℝ: x²≥0',
]);
group('long', [
  'antidisestablishmentarianism', 'pneumonoultramicroscopicsilicovolcanoconiosis',
  'Supercalifragilisticexpialidocious', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  'ThisIsAVeryLongIdentifierWrittenInPascalCaseWithoutAnySpacesAtAll',
  'aVeryLongWordWithNoSpaces'.repeat(8),
]);
group('repeated', [
  'a'.repeat(100), ' '.repeat(50), '!'.repeat(40), '0'.repeat(64), 'ab'.repeat(50), '\n'.repeat(20),
  'é'.repeat(30), '😀'.repeat(10), 'ー'.repeat(20), 'ha'.repeat(30), ' a'.repeat(30), '.'.repeat(33),
  'aaaa bbbb', '=-'.repeat(25), '\t'.repeat(9) + 'x', 'zzzzzzzzzzzzzzzzzzz', 'का'.repeat(12),
]);
// U+0085 and U+FEFF: White_Space and JavaScript's \s disagree here, so only oracle C applies.
group('whitespace-nel-bom', [
  'a\u0085b', 'x \u0085y', '\u0085', '\u0085\u0085 a', 'end\u0085', ' \u0085 ', '\ufeffHello',
  'a\ufeff b', 'a \ufeff', '\ufeff\ufeff', ' \ufeffx', 'x\ufeff\ufeff y', ' \u0085x',
]);

// Random strings over a mixed alphabet: stress the splitter's corners.
const alphabet = ['a', 'b', 'Z', ' ', ' ', '  ', '\t', '\n', "'", "'s", "'ll", '1', '9', '.', ',', '!',
  'é', 'ß', 'न', 'ि', '्', '你', '😀', '🏽', '\u200d', '٣', '½', '\u00a0', '\u3000', '-', '_', '"'];
for (let i = 0; i < 60; i++) {
  let s = '';
  const n = 1 + Math.floor(rand() * 20);
  for (let k = 0; k < n; k++) s += pick(alphabet);
  group('random', [s]);
}

// ----------------------------------------------------------------------------------------------
// Cases

const cases = [];
const report = { both: 0, tiktokenVsGpt3: [], refVsJs: [] };
for (const [name, strings] of groups) {
  for (const text of strings) {
    const bytes = utf8(text);
    const ref = refEncode(bytes);
    const jsApplies = !/[\u0085\ufeff]/.test(text);
    let ids = ref, oracle = 'reference-split+gpt-3-encoder-bpe';
    if (jsApplies) {
      const a = tiktoken.encode(text, [], []);
      const b = gpt3.encode(text);
      report.both++;
      if (!same(a, b)) report.tiktokenVsGpt3.push({ text, tiktoken: a, gpt3: b });
      if (!same(a, ref)) report.refVsJs.push({ text, tiktoken: a, ref });
      ids = b; // merges-based, as spec §7 and transformers define GPT-2's BPE
      oracle = same(a, b) ? 'js-tiktoken=gpt-3-encoder' : 'gpt-3-encoder';
    }
    cases.push({ group: name, text, hex: hex(bytes), ids, oracle });
  }
}

// Byte strings that are not UTF-8 (oracle C only).
const invalid = [
  [0xff], [0xfe, 0xff], [0x80], [0xc0, 0x80], [0xc3], [0xe2, 0x82], [0xe2, 0x82, 0x61],
  [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf0, 0x9f, 0x98], [0x61, 0xff, 0x62],
  [0x20, 0xff], [0x20, 0xff, 0x20, 0x61], [0x27, 0xff], [0x27, 0x73, 0xff], [0x31, 0xff, 0x32],
  [0xc3, 0xa9, 0xc3], [0xff, 0xc3, 0xa9], [0x0a, 0xff, 0x0a], [0x20, 0x20, 0xfe],
  [0xe0, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc1, 0xbf], [0x80, 0x80, 0x80, 0x80],
  [...utf8('Hello '), 0xff, ...utf8(' world')], [...utf8('नमस्'), 0xe0, 0xa4], [0xef, 0xbb, 0xbf, 0x61],
];
for (let i = 0; i < 40; i++) { // random bytes mixed with pieces of text
  const bytes = [];
  const n = 1 + Math.floor(rand() * 16);
  for (let k = 0; k < n; k++) {
    const r = rand();
    if (r < 0.4) bytes.push(Math.floor(rand() * 256));
    else if (r < 0.6) bytes.push(0x80 + Math.floor(rand() * 64));
    else bytes.push(...utf8(pick(alphabet)));
  }
  invalid.push(bytes);
}
for (const bytes of invalid) {
  let valid = true;
  try { strict.decode(Uint8Array.from(bytes)); } catch (e) { valid = false; }
  cases.push({ group: valid ? 'random-bytes-valid' : 'invalid-utf8', hex: hex(bytes), ids: refEncode(bytes),
               oracle: 'reference-split+gpt-3-encoder-bpe' });
}

// Decode: ids -> text, invalid UTF-8 replaced by U+FFFD (Node's decoder, maximal subparts).
const byteId = (b) => G.encoder[G.byte_encoder[b]];
const decodeCases = [];
const decodeInputs = [
  [byteId(0xe2), byteId(0x82), byteId(0xac)], // € split over three tokens
  [byteId(0xe2), byteId(0x82)], [byteId(0xff)], [byteId(0xe2), 50256, byteId(0x82), byteId(0xac)],
  [50256, ...gpt3.encode('a cat on a mat '), 50256], [15496, 50256, 995], [50256], [],
  [byteId(0xed), byteId(0xa0), byteId(0x80)], [byteId(0xf0), byteId(0x9f), byteId(0x98), byteId(0x80)],
  [byteId(0xf0), byteId(0x9f), byteId(0x98), 0x20 + 0, byteId(0x80)],
  gpt3.encode('Hello , world . It \'s fine ! Isn \'t it ?'),
];
for (let i = 0; i < 30; i++) {
  const ids = [];
  const n = Math.floor(rand() * 12);
  for (let k = 0; k < n; k++) {
    const r = rand();
    if (r < 0.5) ids.push(byteId(0x80 + Math.floor(rand() * 128)));
    else if (r < 0.6) ids.push(50256);
    else ids.push(Math.floor(rand() * 50256));
  }
  decodeInputs.push(ids);
}
for (const ids of decodeInputs) {
  const keep = ids.flatMap(tokenBytes);
  const skip = ids.filter((id) => id !== 50256).flatMap(tokenBytes);
  decodeCases.push({ ids, text_hex: hex(utf8(lossy.decode(Uint8Array.from(keep)))),
                     text_skip_special_hex: hex(utf8(lossy.decode(Uint8Array.from(skip)))) });
}

// Encode with special tokens recognised in the text (transformers' tokenizer(text)).
const specialCases = ['<|endoftext|>', 'a<|endoftext|>b', 'hello <|endoftext|> world',
  '<|endoftext|><|endoftext|>', 'x<|endoftext', '<|endoftext|>\n'].map((text) =>
  ({ hex: hex(utf8(text)), ids: tiktoken.encode(text, 'all') }));

// Sanity of the oracles themselves: gpt-3-encoder keys its merge table by "a,b", so merges
// whose tokens contain commas can collide.
const keys = new Map();
let collisions = 0;
G.bpe_merges.forEach(([a, b]) => { const k = `${a},${b}`; if (keys.has(k)) collisions++; keys.set(k, 1); });

const outDir = 'tests/fixtures/tokenizer';
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'cases.json'), JSON.stringify({
  about: 'Generated by weights/tools/gen_tokenizer_cases.cjs; see its header for the oracles.',
  versions: { node: process.version, unicode: process.versions.unicode, 'js-tiktoken': require(path.join(modules, 'js-tiktoken', 'package.json')).version,
              'gpt-3-encoder': require(path.join(modules, 'gpt-3-encoder', 'package.json')).version },
  encode: cases, decode: decodeCases, encode_special: specialCases,
}, null, 0).replace(/\},\{/g, '},\n{') + '\n');

// ----------------------------------------------------------------------------------------------
// A small tokenizer: GPT-2's first 500 merges (ids 0..755 as in GPT-2) and <|endoftext|> = 756.
const N_MERGES = 500;
const smallVocab = {};
for (const [tok, id] of Object.entries(G.encoder)) if (id < 256 + N_MERGES) smallVocab[tok] = id;
smallVocab['<|endoftext|>'] = 256 + N_MERGES;
const smallMerges = G.bpe_merges.slice(0, N_MERGES);
for (const [i, [a, b]] of smallMerges.entries())
  if (G.encoder[a + b] !== 256 + i) throw new Error(`GPT-2 merge ${i} does not make id ${256 + i}`);
const write = (dir, name, data) => {
  fs.mkdirSync(path.join(outDir, dir), { recursive: true });
  fs.writeFileSync(path.join(outDir, dir, name), data);
};
write('small', 'vocab.json', JSON.stringify(smallVocab) + '\n');
write('small', 'merges.txt', '#version: 0.2\n' + smallMerges.map(([a, b]) => `${a} ${b}`).join('\n') + '\n');
// Config files as transformers writes them, with two extra special tokens to find.
write('small', 'tokenizer_config.json', JSON.stringify({
  add_prefix_space: false,
  added_tokens_decoder: {
    [256 + N_MERGES]: { content: '<|endoftext|>', lstrip: false, normalized: true, rstrip: false,
                        single_word: false, special: true },
    [257 + N_MERGES]: { content: '<|caption|>', lstrip: false, normalized: false, rstrip: false,
                        single_word: false, special: false },
  },
  bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>',
  clean_up_tokenization_spaces: true, model_max_length: 1024, tokenizer_class: 'GPT2Tokenizer',
}, null, 2) + '\n');
write('small', 'special_tokens_map.json', JSON.stringify({
  bos_token: { content: '<|endoftext|>', lstrip: false, normalized: true, rstrip: false, single_word: false },
  eos_token: '<|endoftext|>', unk_token: '<|endoftext|>', pad_token: '<pad>',
}, null, 2) + '\n');
const tokenizerJson = (merges) => JSON.stringify({
  version: '1.0', truncation: null, padding: null,
  added_tokens: [{ id: 256 + N_MERGES, content: '<|endoftext|>', single_word: false, lstrip: false,
                   rstrip: false, normalized: true, special: true }],
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '',
           end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab: smallVocab, merges },
}) + '\n';
write('small_json', 'tokenizer.json', tokenizerJson(smallMerges.map(([a, b]) => `${a} ${b}`)));
write('small_pairs', 'tokenizer.json', tokenizerJson(smallMerges));

// ----------------------------------------------------------------------------------------------
console.log(`${cases.length} encode cases (${report.both} where both JS encoders apply), ` +
            `${decodeCases.length} decode cases, ${specialCases.length} encode-special cases`);
console.log(`js-tiktoken vs gpt-3-encoder: ${report.both - report.tiktokenVsGpt3.length}/${report.both} agree`);
for (const d of report.tiktokenVsGpt3) console.log('  differ:', JSON.stringify(d));
console.log(`reference split (White_Space) vs js-tiktoken: ${report.both - report.refVsJs.length}/${report.both} agree`);
for (const d of report.refVsJs) console.log('  differ:', JSON.stringify(d));
console.log(`gpt-3-encoder merge-key collisions ("a,b" keys): ${collisions}`);
