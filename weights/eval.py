"""Measures a captioning model on fresh scenes of the world, with the C binary.

    /usr/bin/python3 weights/eval.py --seed S --count N [--split train|heldout] \
        [--model DIR] [--xcap PATH] [--torch] [--out DIR] [--threads T] [--emoji-dir DIR]

1. Renders scenes 0..N-1 of stream (S, split) with weights/world/scenes.py into OUT (PNG files
   and scenes.jsonl, the same bytes the generator command writes). S must differ from the
   training stream (seed 1) and the validation set (seed 1001) of weights/train/train.py.
2. Captions all of them with ONE `xcap caption --json -m DIR` process (the model is loaded
   once), with the model's own decoding settings (generation_config.json): no decoding flag.
3. Compares each caption with the scene's one correct caption: exact match, and per slot, both
   captions parsed by the grammar of weights/world/GRAMMAR.md (SLOT_RULES below says how).
4. With --torch, captions the same PNG files with the PyTorch reference
   (weights/reference/hf_vit_gpt2.py + generate.py, the model's generation_config.json) and
   reports how often C and PyTorch give the same caption string.

Writes OUT/results.jsonl (one line per scene: reference, C caption, PyTorch caption, slots),
OUT/summary.json (every number below, machine-readable) and OUT/table.md (the Markdown tables
for the model card), and prints the tables. weights/default/make_card_tables.py merges several
summary.json files into the card.
"""

import argparse
import collections
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

WEIGHTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(WEIGHTS)
WORLD_DIR = os.path.join(WEIGHTS, "world")
sys.path.insert(0, WORLD_DIR)

# Streams the trainer has seen or selected on (train.py defaults --seed and --val-seed).
TRAIN_SEED, VAL_SEED = 1, 1001

SLOT_RULES = """\
Slots are read by parsing both the generated and the correct caption with the grammar of
weights/world/GRAMMAR.md (`<objects> on <a|an> <colour> background`, `<objects>` one of: `<a|an>
N`, `two Ns`, `three Ns`, `two Ns and <a|an> M`, `<a|an> N left of|above <a|an> M`, `<a|an> N,
<a|an> M and <a|an> K`; nouns and plurals from classes.json). A caption that does not parse
scores wrong on every slot it does not yield.
- objects: the multiset of nouns (each class with its number of objects) is the scene's.
- counts: the count pattern alone, classes ignored (1; 2; 1+1; 3; 2+1; 1+1+1).
- relation: scenes with two different classes only; the relation phrase (left of / above).
- order: relation and three-class scenes whose objects are right; nouns in the correct order
  (left/top first; left to right).
- colour: the background colour word.
- well-formed: the caption parses and its articles, plurals and noun repetitions are
  grammatical."""

# The scene kinds of GRAMMAR.md, in the order the tables list them; relation scenes are split
# by axis because the axis (and the order along it) is what a model has to read from layout.
KINDS = ("single", "pair_same", "left of", "above", "triple_same", "two_and_one",
         "three_distinct")
KIND_LABELS = {"single": "one object", "pair_same": "two of a class", "left of": "left of",
               "above": "above", "triple_same": "three of a class",
               "two_and_one": "two of a class + one", "three_distinct": "three classes"}
SLOTS = ("objects", "counts", "relation", "order", "colour", "well_formed")


# ------------------------------------------------------------------------------------------
# The caption grammar, read backwards
# ------------------------------------------------------------------------------------------


class CaptionParser:
    """Turns a caption of the world's language into its slots. Lenient where it can be (a
    wrong article still yields the noun, and marks the caption not well-formed), so that a
    near miss is scored slot by slot."""

    def __init__(self, world_dir=WORLD_DIR):
        with open(os.path.join(world_dir, "classes.json"), encoding="utf-8") as f:
            classes = json.load(f)
        with open(os.path.join(world_dir, "colours.json"), encoding="utf-8") as f:
            colours = json.load(f)
        self.article = {c["noun"]: c["article"] for c in classes}
        self.singular_of_plural = {c["plural"]: c["noun"] for c in classes}
        self.colour_article = {c["name"]: c["article"] for c in colours}

    def _noun(self, article, word, ok):
        if word not in self.article:
            return None
        ok.append(article == self.article[word])
        return word

    def _plural(self, word):
        return self.singular_of_plural.get(word)

    def parse(self, caption):
        """{"names": nouns in caption order with repeats, or None; "relation"; "colour";
        "well_formed"}. names is None when <objects> does not parse."""
        out = {"names": None, "relation": None, "colour": None, "well_formed": False}
        m = re.fullmatch(r"(.+) on (a|an) (\S+) background", caption)
        if m is None:
            return out
        phrase, colour_article, colour = m.groups()
        ok = []
        if colour in self.colour_article:
            out["colour"] = colour
            ok.append(colour_article == self.colour_article[colour])
        else:
            ok.append(False)
        names = None
        if (m := re.fullmatch(r"three (\S+)", phrase)):
            n = self._plural(m[1])
            names = None if n is None else [n] * 3
        elif (m := re.fullmatch(r"two (\S+) and (an?) (\S+)", phrase)):
            n, k = self._plural(m[1]), self._noun(m[2], m[3], ok)
            names = None if None in (n, k) else [n, n, k]
            ok.append(n != k)
        elif (m := re.fullmatch(r"two (\S+)", phrase)):
            n = self._plural(m[1])
            names = None if n is None else [n] * 2
        elif (m := re.fullmatch(r"(an?) (\S+) (left of|above) (an?) (\S+)", phrase)):
            a, b = self._noun(m[1], m[2], ok), self._noun(m[4], m[5], ok)
            names = None if None in (a, b) else [a, b]
            out["relation"] = m[3]
            ok.append(a != b)
        elif (m := re.fullmatch(r"(an?) (\S+), (an?) (\S+) and (an?) (\S+)", phrase)):
            trio = [self._noun(m[1], m[2], ok), self._noun(m[3], m[4], ok),
                    self._noun(m[5], m[6], ok)]
            names = None if None in trio else trio
            ok.append(len(set(trio)) == 3)
        elif (m := re.fullmatch(r"(an?) (\S+)", phrase)):
            n = self._noun(m[1], m[2], ok)
            names = None if n is None else [n]
        out["names"] = names
        out["well_formed"] = names is not None and out["colour"] is not None and all(ok)
        return out


def objects_of(parsed):
    """The multiset of nouns as a sorted list of [noun, count], or None."""
    if parsed["names"] is None:
        return None
    return sorted([n, c] for n, c in collections.Counter(parsed["names"]).items())


def counts_of(parsed):
    if parsed["names"] is None:
        return None
    return sorted(collections.Counter(parsed["names"]).values(), reverse=True)


def kind_of(parsed):
    names = parsed["names"]
    distinct = len(set(names))
    if len(names) == 1:
        return "single"
    if len(names) == 2:
        return "pair_same" if distinct == 1 else parsed["relation"]
    return {1: "triple_same", 2: "two_and_one", 3: "three_distinct"}[distinct]


def score(reference, generated, parser):
    """Slot verdicts of one generated caption against the correct one. A slot that does not
    apply to the scene is None (and left out of that slot's denominator)."""
    ref, gen = parser.parse(reference), parser.parse(generated)
    if ref["names"] is None or not ref["well_formed"]:
        raise ValueError(f"reference caption {reference!r} does not parse: the parser and "
                         f"weights/world/world.py disagree")
    kind = kind_of(ref)
    objects_ok = objects_of(gen) == objects_of(ref)
    ordered = kind in ("left of", "above", "three_distinct")
    return {
        "kind": kind,
        "n_objects": len(ref["names"]),
        "exact": generated == reference,
        "objects": objects_ok,
        "counts": counts_of(gen) == counts_of(ref),
        "relation": gen["relation"] == ref["relation"] if ref["relation"] else None,
        "order": gen["names"] == ref["names"] if ordered and objects_ok else None,
        "colour": gen["colour"] == ref["colour"],
        "well_formed": gen["well_formed"],
    }


# ------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------


def wilson(hits, n, z=1.96):
    """95% Wilson score interval of a proportion (sensible at 0 and 100% too)."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def rate(verdicts):
    """{"n", "hits", "rate"} over the verdicts that apply (not None)."""
    applicable = [v for v in verdicts if v is not None]
    n, hits = len(applicable), sum(bool(v) for v in applicable)
    return {"n": n, "hits": hits, "rate": hits / n if n else None}


def summarise(rows):
    out = {"exact": rate([r["exact"] for r in rows])}
    out["exact"]["ci95"] = wilson(out["exact"]["hits"], out["exact"]["n"])
    for slot in SLOTS:
        out[slot] = rate([r[slot] for r in rows])
    return out


# ------------------------------------------------------------------------------------------
# Running the two implementations
# ------------------------------------------------------------------------------------------


def run_xcap(xcap, model_dir, paths, threads):
    """{path: caption or {"error": ...}} from one xcap process; seconds taken."""
    cmd = [xcap, "caption", "--json", "-m", model_dir]
    if threads:
        cmd += ["-t", str(threads)]
    t0 = time.time()
    proc = subprocess.run(cmd + paths, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode not in (0, 1):   # 1: some image failed; it is reported per image
        sys.exit(f"{xcap} exited with {proc.returncode}: {proc.stderr.strip()}")
    results = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        results[record["file"]] = record
    missing = [p for p in paths if p not in results]
    if missing:
        sys.exit(f"{xcap}: no output for {len(missing)} files, e.g. {missing[0]}")
    return results, seconds


class TorchCaptioner:
    """The PyTorch reference with the model directory's own decoding settings."""

    def __init__(self, model_dir, threads):
        sys.path.insert(0, os.path.join(WEIGHTS, "reference"))
        import torch
        import generate
        import hf_vit_gpt2 as ref
        if threads:
            torch.set_num_threads(threads)
        self.ref, self.generate = ref, generate
        self.model = ref.VisionEncoderDecoder.from_pretrained(model_dir)
        self.proc = ref.load_processor(model_dir)
        self.tok = ref.load_tokenizer(model_dir)
        self.settings = generate.load_settings(model_dir)

    def __call__(self, path):
        # load_rgb + preprocess are transformers' load_image and ViTImageProcessor (spec §3)
        _, pixels = self.ref.preprocess(self.ref.load_rgb(path), self.proc)
        best = self.generate.caption(self.model, pixels, self.settings)[0]
        return self.tok.decode(best.tokens)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def pct(r, with_n=False):
    if r is None or r["rate"] is None:
        return "–"
    text = f"{100 * r['rate']:.1f}%"
    return f"{text} ({r['hits']}/{r['n']})" if with_n else text


def scenes_label(s):
    what = "in-distribution" if s["split"] == "train" else "held-out pairs"
    extra = f", emoji {os.path.basename(s['emoji_dir'].rstrip('/'))}" if s.get("emoji_dir") else ""
    return f"{what} (seed {s['seed']}{extra})"


def markdown_tables(summaries):
    """The model card's results tables for one or more summary.json objects."""
    lines = ["| scenes | n | exact match (95% CI) | objects | counts | relation | order | "
             "colour | well-formed | C = PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        o = s["overall"]
        ci = o["exact"]["ci95"]
        exact = f"**{pct(o['exact'])}** ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})"
        agree = pct(s["c_vs_torch"]["same_caption"]) if s.get("c_vs_torch") else "not run"
        lines.append(f"| {scenes_label(s)} | {o['exact']['n']} | {exact} | "
                     + " | ".join(pct(o[k]) for k in SLOTS) + f" | {agree} |")
    for s in summaries:
        lines += ["", f"{scenes_label(s)}, by scene:", "",
                  "| scene | n | exact | objects | counts | relation | order | colour |",
                  "|---|---|---|---|---|---|---|---|"]
        groups = [(f"{k} object{'s' * (k > 1)}", s["by_objects"].get(str(k)))
                  for k in (1, 2, 3)]
        groups += [(f"– {KIND_LABELS[k]}", s["by_kind"].get(k)) for k in KINDS]
        for label, g in groups:
            if g is None or not g["exact"]["n"]:
                continue
            lines.append(f"| {label} | {g['exact']['n']} | {pct(g['exact'])} | "
                         + " | ".join(pct(g[k]) for k in SLOTS[:-1]) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Evaluate a captioning model on fresh world scenes "
                                 "with the C binary.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seed", type=int, required=True,
                    help=f"scene stream; not {TRAIN_SEED} (training) or {VAL_SEED} (validation)")
    ap.add_argument("--count", type=int, required=True, help="number of scenes")
    ap.add_argument("--split", choices=("train", "heldout"), default="train",
                    help="train: in-distribution scenes; heldout: held-out class pairs only")
    ap.add_argument("--model", default=os.path.join(REPO, "weights", "default"))
    ap.add_argument("--xcap", default=os.path.join(REPO, "build", "xcap"))
    ap.add_argument("--torch", action="store_true", help="also caption with the PyTorch "
                    "reference and report C-vs-PyTorch agreement")
    ap.add_argument("--out", default=None,
                    help="folder for scenes and results (default /tmp/xcap-eval-SPLIT-sSEED-nN)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for xcap (-t) and torch; 0 = their defaults")
    ap.add_argument("--emoji-dir", default=None,
                    help="draw the objects with another artist's emoji (same scenes, captions)")
    ap.add_argument("--errors", type=int, default=12, help="wrong captions to print")
    args = ap.parse_args(argv)
    if args.seed in (TRAIN_SEED, VAL_SEED):
        ap.error(f"--seed {args.seed}: the trainer uses seed {TRAIN_SEED} for training and "
                 f"{VAL_SEED} for validation; evaluate on another stream")
    if args.count <= 0 or args.seed < 0:
        ap.error("--count must be positive and --seed not negative")
    for what, path in (("--model", args.model), ("--xcap", args.xcap)):
        if not os.path.exists(path):
            ap.error(f"{what} {path}: not found")
    if args.out is None:
        args.out = f"/tmp/xcap-eval-{args.split}-s{args.seed}-n{args.count}"
    return args


def render_scenes(args):
    import scenes as generator   # weights/world/scenes.py: the generator command itself
    cmd = ["--seed", str(args.seed), "--count", str(args.count), "--out", args.out,
           "--split", args.split]
    if args.emoji_dir:
        cmd += ["--emoji-dir", args.emoji_dir]
    generator.main(cmd)
    with open(os.path.join(args.out, "scenes.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main(argv=None):
    args = parse_args(argv)
    parser = CaptionParser()
    t0 = time.time()
    records = render_scenes(args)
    render_s = time.time() - t0
    paths = [os.path.join(args.out, r["file"]) for r in records]

    c_out, c_seconds = run_xcap(args.xcap, args.model, paths, args.threads)
    torch_captions, torch_seconds = None, None
    if args.torch:
        t0 = time.time()
        captioner = TorchCaptioner(args.model, args.threads)
        torch_captions = [captioner(p) for p in paths]
        torch_seconds = time.time() - t0

    rows = []
    for i, (record, path) in enumerate(zip(records, paths)):
        c = c_out[path]
        generated = c.get("caption", "")
        row = score(record["caption"], generated, parser)
        # The parser reads back what world.py wrote: the nouns, in the order the caption
        # names them (scenes.jsonl lists objects in that order).
        if parser.parse(record["caption"])["names"] != [o["noun"] for o in record["objects"]]:
            sys.exit(f"{record['file']}: parsed {record['caption']!r} disagrees with its "
                     f"objects in scenes.jsonl")
        row.update({"file": record["file"], "reference": record["caption"],
                    "xcap": generated})
        if "error" in c:
            row["xcap_error"] = c["error"]
        if torch_captions is not None:
            row["torch"] = torch_captions[i]
            row["same_as_torch"] = torch_captions[i] == generated and "error" not in c
        rows.append(row)

    summary = {
        "model": os.path.abspath(args.model),
        "model_sha256": sha256_of(os.path.join(args.model, "model.safetensors")),
        "xcap": os.path.abspath(args.xcap), "seed": args.seed, "count": args.count,
        "split": args.split, "emoji_dir": args.emoji_dir,
        "decoding": "the model's generation_config.json (no decoding flags)",
        "slot_rules": SLOT_RULES,
        "overall": summarise(rows),
        "by_objects": {str(k): summarise([r for r in rows if r["n_objects"] == k])
                       for k in (1, 2, 3)},
        "by_kind": {k: summarise([r for r in rows if r["kind"] == k]) for k in KINDS},
        "xcap_errors": sum("xcap_error" in r for r in rows),
        "seconds": {"render": round(render_s, 2), "xcap": round(c_seconds, 2),
                    "torch": None if torch_seconds is None else round(torch_seconds, 2)},
        "wrong": [[r["reference"], r["xcap"]] for r in rows if not r["exact"]][:50],
    }
    if torch_captions is not None:
        summary["c_vs_torch"] = {
            "same_caption": rate([r["same_as_torch"] for r in rows]),
            "torch_exact": rate([r["torch"] == r["reference"] for r in rows]),
            "differing": [[r["file"], r["xcap"], r["torch"]] for r in rows
                          if not r["same_as_torch"]][:50],
        }

    with open(os.path.join(args.out, "results.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    table = markdown_tables([summary])
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n" + SLOT_RULES + "\n")

    print(table)
    print(SLOT_RULES)
    wrong = [r for r in rows if not r["exact"]]
    if wrong:
        print(f"\nwrong captions ({len(wrong)}; first {min(len(wrong), args.errors)}):")
        for r in wrong[:args.errors]:
            print(f"  {r['file']}: want {r['reference']!r}\n  {' ' * len(r['file'])}  got  "
                  f"{r['xcap']!r}")
    if torch_captions is not None:
        diff = summary["c_vs_torch"]["differing"]
        print(f"\nC vs PyTorch: {pct(summary['c_vs_torch']['same_caption'], True)} same caption")
        for name, c, t in diff[:args.errors]:
            print(f"  {name}: C {c!r} | PyTorch {t!r}")
    print(f"\nxcap: {len(rows)} images in {c_seconds:.1f} s (one process, model loaded once)"
          f"; scenes, results.jsonl, summary.json, table.md in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
