"""GPT-2 byte-level BPE tokenizer (spec §7), written from transformers' `tokenization_gpt2.py`.

Loads `vocab.json` + `merges.txt` or a `tokenizer.json`, encodes text (GPT-2's pre-tokenizer
pattern, implemented by hand because the `regex` package is not available here), decodes ids
(special tokens skipped, invalid UTF-8 replaced by U+FFFD as `bytes.decode(errors="replace")`
does), and trains a small merge list for the fixture vocabularies.
"""

import json
import os
import unicodedata

CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")  # after an apostrophe, case-sensitive

# Unicode White_Space, which is what \s means in the `regex` module GPT-2's pattern runs in.
WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)] + [" ", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)] + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"])


def bytes_to_unicode():
    """Byte -> printable character table: bytes 33-126, 161-172, 174-255 map to themselves;
    the other 68 bytes, in increasing order, to code points 256, 257, ..."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokens_in_gpt2_order():
    """The 256 single-byte token strings in GPT-2's vocabulary order (ids 0-255 of GPT-2):
    the printable bytes first, then the remapped ones."""
    table = bytes_to_unicode()
    printable = [b for b in range(256) if table[b] == chr(b)]
    others = [b for b in range(256) if table[b] != chr(b)]
    return [table[b] for b in printable + others]


def _is_letter(ch):
    return unicodedata.category(ch).startswith("L")


def _is_number(ch):
    return unicodedata.category(ch).startswith("N")


def pretokenize(text):
    """Splits text like GPT-2's pattern
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    trying the alternatives in order at each position, as the regex engine does."""
    pieces = []
    i, n = 0, len(text)

    def run(j, pred):
        while j < n and pred(text[j]):
            j += 1
        return j

    def other(ch):
        return ch not in WHITE_SPACE and not _is_letter(ch) and not _is_number(ch)

    while i < n:
        ch = text[i]
        if ch == "'":
            hit = next((c for c in CONTRACTIONS if text.startswith(c, i + 1)), None)
            if hit is not None:
                pieces.append(text[i:i + 1 + len(hit)])
                i += 1 + len(hit)
                continue
        matched = False
        for pred in (_is_letter, _is_number, other):  # ` ?X+`, the space being a literal ' '
            if ch == " " and i + 1 < n and pred(text[i + 1]):
                j = run(i + 1, pred)
            elif pred(ch):
                j = run(i, pred)
            else:
                continue
            pieces.append(text[i:j])
            i = j
            matched = True
            break
        if matched:
            continue
        # no optional-space form matched: text[i] is white space
        j = run(i, lambda c: c in WHITE_SPACE)
        if j < n and j - i > 1:
            j -= 1  # \s+(?!\S): leave the last space to prefix the next word
        pieces.append(text[i:j])
        i = j
    return pieces


def clean_up_tokenization(text):
    """transformers' `clean_up_tokenization` (used when clean_up_tokenization_spaces is true)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                          (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                          (" 're", "'re")):
        text = text.replace(before, after)
    return text


class ByteLevelBPE:
    def __init__(self, vocab, merges, special_tokens=("<|endoftext|>",),
                 clean_up_tokenization_spaces=False):
        self.vocab = dict(vocab)                       # token string -> id
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.merges = [tuple(m) for m in merges]       # rank order
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.special_tokens = [t for t in special_tokens if t in self.vocab]
        self.special_ids = {self.vocab[t] for t in self.special_tokens}
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces

    # --- loading and saving -------------------------------------------------------------
    @classmethod
    def from_files(cls, vocab_path, merges_path, **kw):
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        merges = []
        with open(merges_path, encoding="utf-8") as f:
            for line in f.read().split("\n"):
                if not line or line.startswith("#version"):
                    continue
                a, b = line.split(" ")
                merges.append((a, b))
        return cls(vocab, merges, **kw)

    @classmethod
    def from_tokenizer_json(cls, path, **kw):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        vocab = dict(model["vocab"])
        specials = []
        for added in tj.get("added_tokens", []):
            vocab.setdefault(added["content"], added["id"])
            if added.get("special"):
                specials.append(added["content"])
        kw.setdefault("special_tokens", specials or ("<|endoftext|>",))
        return cls(vocab, merges, **kw)

    @classmethod
    def from_dir(cls, model_dir):
        """vocab.json + merges.txt when present, else tokenizer.json (spec §1); the clean-up
        flag from tokenizer_config.json (default false, as in the newest transformers)."""
        kw = {}
        cfg_path = os.path.join(model_dir, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
            kw["clean_up_tokenization_spaces"] = bool(cfg.get("clean_up_tokenization_spaces", False))
        vocab_path = os.path.join(model_dir, "vocab.json")
        merges_path = os.path.join(model_dir, "merges.txt")
        if os.path.exists(vocab_path) and os.path.exists(merges_path):
            return cls.from_files(vocab_path, merges_path, **kw)
        return cls.from_tokenizer_json(os.path.join(model_dir, "tokenizer.json"), **kw)

    def save_vocab_merges(self, model_dir):
        """Writes vocab.json and merges.txt the way GPT2Tokenizer.save_vocabulary does."""
        with open(os.path.join(model_dir, "vocab.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(self.vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        with open(os.path.join(model_dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write(f"{a} {b}\n")

    def tokenizer_json(self):
        """A `tokenizer.json` (Hugging Face tokenizers) for this vocabulary, merges as pairs."""
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": self.vocab[t], "content": t, "single_word": False, "lstrip": False,
                 "rstrip": False, "normalized": True, "special": True}
                for t in self.special_tokens],
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": dict(byte_level, trim_offsets=False),
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": self.vocab, "merges": [list(m) for m in self.merges]},
        }

    # --- encoding and decoding ---------------------------------------------------------
    def bpe(self, word):
        """Merges the lowest-ranked adjacent pair, all its occurrences left to right, until no
        pair has a rank."""
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[k], parts[k + 1]) for k in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, k = [], 0
            while k < len(parts):
                if k + 1 < len(parts) and (parts[k], parts[k + 1]) == best:
                    merged.append(parts[k] + parts[k + 1])
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        return parts

    def encode(self, text):
        ids = []
        for piece in pretokenize(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocab[t] for t in self.bpe(mapped))
        return ids

    def decode(self, ids, skip_special_tokens=True):
        tokens = [self.id_to_token[i] for i in ids
                  if not (skip_special_tokens and i in self.special_ids)]
        raw = bytearray()
        for tok in tokens:
            if tok in self.special_tokens:  # kept special tokens are plain text
                raw.extend(tok.encode("utf-8"))
            else:
                raw.extend(self.byte_decoder[c] for c in tok)
        text = raw.decode("utf-8", errors="replace")
        if self.clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text


def train_merges(texts, n_merges):
    """Learns n_merges byte-level BPE merges from texts (most frequent adjacent pair first,
    ties broken by the pair's strings, so the result is deterministic)."""
    enc = bytes_to_unicode()
    words = {}
    for text in texts:
        for piece in pretokenize(text):
            word = tuple(enc[b] for b in piece.encode("utf-8"))
            words[word] = words.get(word, 0) + 1
    merges = []
    for _ in range(n_merges):
        counts = {}
        for word, freq in words.items():
            for k in range(len(word) - 1):
                pair = (word[k], word[k + 1])
                counts[pair] = counts.get(pair, 0) + freq
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        new_words = {}
        for word, freq in words.items():
            out, k = [], 0
            while k < len(word):
                if k + 1 < len(word) and (word[k], word[k + 1]) == best:
                    out.append(word[k] + word[k + 1])
                    k += 2
                else:
                    out.append(word[k])
                    k += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + freq
        words = new_words
    return merges


def build_vocab(merges, eos_token="<|endoftext|>"):
    """GPT-2-style vocabulary: 256 byte tokens (GPT-2's order), one token per merge, and the
    end-of-text token last."""
    vocab = {}
    for tok in byte_tokens_in_gpt2_order():
        vocab[tok] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab[eos_token] = len(vocab)
    return vocab
