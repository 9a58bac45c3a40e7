"""Learns the byte-level BPE of the caption language and writes it in GPT-2's file format.

    /usr/bin/python3 weights/world/make_tokenizer.py [--out weights/world/tokenizer]

vocab.json + merges.txt exactly as GPT-2 ships them (spec §7): GPT-2's byte-to-unicode table,
the 256 byte tokens first (ids 0-255 in GPT-2's order), one token per merge, `<|endoftext|>`
last (bos = eos = pad). Merges are learned from the language's word list (World.vocabulary()):
each word once with its leading space ("Ġdog"), plus the bare forms a caption can start with
("a", "an", "two", "three"), most frequent pair first until every one of those pieces is a
single token. Then it checks, with the reference encoder, that every word is one token and that
thousands of captions of both splits encode to one token per word and decode back unchanged.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

from bpe_tokenizer import ByteLevelBPE, build_vocab, pretokenize, train_merges  # noqa: E402
from world import World  # noqa: E402

FIRST_WORDS = ("a", "an", "two", "three")   # GRAMMAR.md: a caption starts with one of these
EOS = "<|endoftext|>"


def training_pieces(world):
    pieces = [" " + w for w in world.vocabulary() if w != ","]
    return pieces + list(FIRST_WORDS)   # "," is a byte token already


def expected_tokens(caption):
    """The caption's words as the tokenizer must see them: one token per pre-tokenizer piece."""
    return pretokenize(caption)


def check(tok, world, n_captions):
    enc = tok.byte_encoder
    as_token = lambda piece: "".join(enc[b] for b in piece.encode("utf-8"))  # noqa: E731
    for piece in training_pieces(world) + [","]:
        ids = tok.encode(piece)
        if len(ids) != 1 or tok.id_to_token[ids[0]] != as_token(piece):
            raise SystemExit(f"word {piece!r} encodes to {ids}, not one token")
    longest = 0
    for split in ("train", "heldout"):
        for index in range(n_captions):
            caption = world.scene(12345, index, split)["caption"]
            ids = tok.encode(caption)
            want = [tok.vocab[as_token(p)] for p in expected_tokens(caption)]
            if ids != want:
                raise SystemExit(f"{caption!r}: encodes to {ids}, expected {want}")
            if tok.decode(ids) != caption:
                raise SystemExit(f"{caption!r}: decodes to {tok.decode(ids)!r}")
            longest = max(longest, len(ids))
    return longest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "tokenizer"))
    ap.add_argument("--check", type=int, default=5000, help="captions per split to check")
    args = ap.parse_args()

    world = World()
    merges = train_merges(training_pieces(world), n_merges=100000)  # stops when all are single
    vocab = build_vocab(merges, EOS)
    tok = ByteLevelBPE(vocab, merges, special_tokens=(EOS,))
    os.makedirs(args.out, exist_ok=True)
    tok.save_vocab_merges(args.out)

    reloaded = ByteLevelBPE.from_files(os.path.join(args.out, "vocab.json"),
                                       os.path.join(args.out, "merges.txt"))
    longest = check(reloaded, world, args.check)
    print(f"{len(vocab)} tokens ({len(merges)} merges, {EOS} = {vocab[EOS]}); "
          f"{len(world.vocabulary())} words, each one token; "
          f"longest of {2 * args.check} checked captions: {longest} tokens + eos")


if __name__ == "__main__":
    main()
