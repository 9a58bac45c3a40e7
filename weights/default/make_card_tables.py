"""Fills the generated tables of MODEL_CARD.md (this folder) from the run's files.

    /usr/bin/python3 weights/default/make_card_tables.py \
        [--curve /work/xcap-train/curve.tsv] [--results A/summary.json B/summary.json ...] \
        [--files] [--fill]

--curve    the learning curve (curve.tsv of train.py; a missing training loss is taken from the
           log.jsonl beside it: the last logged loss at or before that many samples)
--results  the results tables of weights/eval.py, one row per summary.json given, and the
           issue's acceptance criteria measured on them
--files    every file of the model folder with its size in bytes and SHA-256: the manifest that
           tests/test_default_model.sh checks
--fill     write the tables into MODEL_CARD.md between its `<!-- BEGIN name -->` and
           `<!-- END name -->` lines; without it they are printed

Each block is replaced whole, so running the command again after a new evaluation or export
leaves the card in step with the files.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import eval as evaluation  # noqa: E402  (weights/eval.py)

CARD = os.path.join(HERE, "MODEL_CARD.md")
# Files of this folder that document the model rather than being part of it.
NOT_MODEL = {"MODEL_CARD.md", "README.md", "make_card_tables.py"}


def training_log(curve_path):
    """The records of the log.jsonl beside curve.tsv (empty when there is none)."""
    path = os.path.join(os.path.dirname(os.path.abspath(curve_path)), "log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def curve_table(path):
    with open(path, encoding="utf-8") as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    log = training_log(path)
    losses = [(r["samples"], r["loss"]) for r in log if r.get("loss") is not None]

    def number(v):
        return None if v in ("None", "") else float(v)

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    lines = ["| samples seen | minutes | training loss | exact (300 val.) | 1 object | "
             "2 objects | 3 objects | held-out pairs (100) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = {k: number(v) for k, v in zip(header, row)}
        loss = r.get("loss")
        if loss is None:   # an evaluation-only record: the last loss logged before it
            earlier = [l for s, l in losses if s <= r["samples"]]
            loss = earlier[-1] if earlier else None
        lines.append(f"| {int(r['samples']):,} | {r['minutes']:.0f} | "
                     f"{'–' if loss is None else f'{loss:.4f}'} | {pct(r['val_exact'])} | "
                     f"{pct(r['val_1obj'])} | {pct(r['val_2obj'])} | {pct(r['val_3obj'])} | "
                     f"{pct(r['heldout_exact'])} |")
    if log:
        last = log[-1]
        lines.append(f"\nThe run: {last['step']:,} optimizer steps, {last['samples']:,} scenes "
                     f"seen (each once), {last['minutes']:.1f} minutes of wall time.")
    return "\n".join(lines) + "\n"


def results_tables(paths):
    summaries = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            summaries.append(json.load(f))
    models = {s["model_sha256"] for s in summaries}
    if len(models) > 1:
        sys.exit(f"--results: the summaries come from {len(models)} different models")
    return evaluation.markdown_tables(summaries) + "\n" + evaluation.SLOT_RULES + "\n"


def acceptance_table(paths):
    """Issue 5's acceptance criteria against the evaluation summaries (in-distribution and
    held-out; C-vs-PyTorch agreement pooled over all their scenes)."""
    summaries = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            summaries.append(json.load(f))

    def exact(split, least, scenes):
        found = [s for s in summaries if s["split"] == split and not s.get("emoji_dir")]
        if not found:
            return "not evaluated", "–"
        e = found[0]["overall"]["exact"]
        if e["n"] < scenes:
            return evaluation.pct(e, with_n=True), f"not decided: fewer than {scenes} scenes"
        return evaluation.pct(e, with_n=True), "yes" if e["rate"] >= least else "**no**"

    agree = [s["c_vs_torch"]["same_caption"] for s in summaries if s.get("c_vs_torch")]
    rows = [("exact match, 1000 in-distribution scenes (C binary, default decoding)", "≥ 90%",
             *exact("train", 0.90, 1000)),
            ("exact match, 500 held-out-pair scenes", "≥ 80%", *exact("heldout", 0.80, 500))]
    if agree:
        pooled = {"n": sum(a["n"] for a in agree), "hits": sum(a["hits"] for a in agree)}
        pooled["rate"] = pooled["hits"] / pooled["n"]
        if pooled["n"] < 1500:   # "those scenes": both evaluations above
            verdict = "not decided: fewer than the 1500 scenes above"
        else:
            verdict = "yes" if pooled["rate"] >= 0.995 else "**no**"
        rows.append(("C and PyTorch give the same caption, on the scenes above", "≥ 99.5%",
                     evaluation.pct(pooled, with_n=True), verdict))
    else:
        rows.append(("C and PyTorch give the same caption", "≥ 99.5%", "not run (--torch)", "–"))
    lines = ["| criterion | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def files_table(folder=HERE):
    lines = ["| file | bytes | SHA-256 |", "|---|---|---|"]
    total = 0
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in NOT_MODEL or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        total += size
        lines.append(f"| `{name}` | {size} | `{evaluation.sha256_of(path)}` |")
    if len(lines) == 2:
        sys.exit(f"--files: no model files in {folder}")
    return "\n".join(lines) + f"\n\nTotal: {total:,} bytes ({total / 1e6:.1f} MB).\n"


def fill(card_path, blocks):
    with open(card_path, encoding="utf-8") as f:
        text = f.read()
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            sys.exit(f"{card_path}: no <!-- BEGIN {name} --> ... <!-- END {name} --> block")
        text = pattern.sub(lambda m: m[1] + body + m[2], text)
    with open(card_path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate the tables of MODEL_CARD.md.")
    ap.add_argument("--curve", help="curve.tsv of the training run")
    ap.add_argument("--results", nargs="+", help="summary.json files of weights/eval.py")
    ap.add_argument("--files", action="store_true", help="the folder's files, sizes, SHA-256")
    ap.add_argument("--fill", action="store_true", help="write into MODEL_CARD.md")
    ap.add_argument("--card", default=CARD, help="the card to fill")
    args = ap.parse_args(argv)
    blocks = {}
    if args.curve:
        blocks["curve"] = curve_table(args.curve)
    if args.results:
        blocks["results"] = results_tables(args.results)
        blocks["acceptance"] = acceptance_table(args.results)
    if args.files:
        blocks["files"] = files_table(os.path.dirname(os.path.abspath(args.card)))
    if not blocks:
        ap.error("nothing to do: give --curve, --results and/or --files")
    if args.fill:
        fill(args.card, blocks)
        print(f"{args.card}: filled {', '.join(blocks)}")
    else:
        for name, body in blocks.items():
            print(f"<!-- {name} -->\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
