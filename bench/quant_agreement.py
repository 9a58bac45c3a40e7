"""Caption agreement of the quantised copies of a model with the fp32 model, on the default
model's evaluation scenes (issue 8: f16 identical to fp32 on >= 99% of scenes; q8 >= 98%, with
exact-match accuracy within 1 point of fp32). Not a test: it needs the scene renderer (Pillow).

    /usr/bin/python3 bench/quant_agreement.py [--model DIR] [--xcap PATH] [--out DIR] [--torch]

1. `xcap quantize MODEL OUT/model-f16 --type f16` and `... --type q8`.
2. For each evaluation set of the model card (in-distribution: seed 2, 1000 scenes; held-out
   class pairs: seed 3, 500 scenes), weights/eval.py with each of fp32, f16 and q8 (the same
   scenes: eval.py renders them from the seed), with --torch on the fp32 run when asked (which
   re-checks C against PyTorch on the same scenes).
3. Per set and type: the share of scenes whose caption is the fp32 caption, exact-match
   accuracy against the correct caption, with Wilson 95% intervals; printed as a Markdown table
   and written to OUT/agreement.json.
"""

import argparse
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = (("in-distribution", 2, 1000, "train"), ("held-out pairs", 3, 500, "heldout"))
TYPES = ("fp32", "f16", "q8")


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def pct(k, n):
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(REPO, "weights", "default"))
    ap.add_argument("--xcap", default=os.path.join(REPO, "build", "xcap"))
    ap.add_argument("--out", default="/tmp/xcap-quant-agreement")
    ap.add_argument("--torch", action="store_true", help="also compare fp32 C with PyTorch")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    models = {"fp32": args.model}
    for t in ("f16", "q8"):
        models[t] = os.path.join(args.out, f"model-{t}")
        subprocess.run([args.xcap, "quantize", args.model, models[t], "--type", t],
                       check=True)

    report = {"model": os.path.abspath(args.model), "sets": {}}
    for name, seed, count, split in SETS:
        rows = {}
        for t in TYPES:
            out = os.path.join(args.out, f"{split}-s{seed}-{t}")
            cmd = [sys.executable, os.path.join(REPO, "weights", "eval.py"), "--seed", str(seed),
                   "--count", str(count), "--split", split, "--model", models[t],
                   "--xcap", args.xcap, "--out", out, "--errors", "0"]
            if t == "fp32" and args.torch:
                cmd.append("--torch")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "results.jsonl"), encoding="utf-8") as f:
                rows[t] = {r["file"]: r for r in map(json.loads, f)}
            if t == "fp32" and args.torch:
                with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
                    report.setdefault("c_vs_torch", {})[name] = json.load(f)["c_vs_torch"]["same_caption"]
        files = sorted(rows["fp32"])
        entry = {}
        for t in TYPES:
            same = sum(rows[t][f]["xcap"] == rows["fp32"][f]["xcap"] for f in files)
            exact = sum(rows[t][f]["xcap"] == rows[t][f]["reference"] for f in files)
            entry[t] = {"scenes": len(files), "same_as_fp32": same, "exact": exact,
                        "differing": [[f, rows["fp32"][f]["xcap"], rows[t][f]["xcap"]]
                                      for f in files if rows[t][f]["xcap"] != rows["fp32"][f]["xcap"]]}
        report["sets"][name] = entry

    print("| set | type | same caption as fp32 (95% CI) | exact match (95% CI) | exact - fp32 |")
    print("|---|---|---|---|---|")
    for name, entry in report["sets"].items():
        base = entry["fp32"]["exact"]
        for t in TYPES:
            e = entry[t]
            n = e["scenes"]
            print(f"| {name} (n={n}) | {t} | {pct(e['same_as_fp32'], n)} | {pct(e['exact'], n)} | "
                  f"{100 * (e['exact'] - base) / n:+.1f} points |")
    if "c_vs_torch" in report:
        for name, v in report["c_vs_torch"].items():
            print(f"C fp32 = PyTorch on {name}: {v}")
    with open(os.path.join(args.out, "agreement.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"written: {os.path.join(args.out, 'agreement.json')}")


if __name__ == "__main__":
    main()
