"""Measures how well the decoder's cross-attention grounds each noun in the object it names.

    /usr/bin/python3 weights/grounding.py --seed S --count N [--model DIR] [--xcap PATH] \
        [--out DIR] [--threads T] [--rollout-heads] [--keep-maps] [--fill-card]

1. Renders the first N scenes of stream (S, train split) that have two or more objects (scenes
   with one object are skipped: only with several objects must a map pick the named one), the
   same pixels and records as weights/world/scenes.py writes, into OUT/scenes/ with
   OUT/scenes/scenes.jsonl. S must differ from the training stream (seed 1) and the validation
   set (seed 1001).
2. Captions them with `xcap caption --json --attention-dir` (one process per pass, the model
   loaded once per pass, the model's own decoding settings: no decoding flag). The first pass
   keeps attention.npy ([tokens, decoder layers, heads, memory]) of every image; attention
   rollout needs the encoder's self-attention, which attention.npy does not hold, so further
   passes add `--fusion rollout --layer L --head mean` (every layer, and `--layer all`) and read
   the drawn map of each token from attention.json ("maps"). --rollout-heads also rolls out each
   single head (one more pass per layer and head).
3. For each caption token that is a noun of the world (classes.json: noun or plural; every
   noun is one token of the world's tokenizer, " dog" and " dogs" alike, which is checked)
   and names a class present in the scene, takes the map's peak patch (argmax over the patch
   grid, CLS excluded), scales the patch centre to image pixels (the processor stretches the
   image to the model input, so patch (r, c) of a rows x cols grid is centred at
   ((c + 0.5) * W / cols, (r + 0.5) * H / rows)) and scores a hit when that point lies inside
   the box [x0, x1) x [y0, y1) of an object of that class. Nouns of classes that are not in the
   scene are counted apart as hallucinated. "chance" is the hit rate of a peak drawn uniformly
   over the patches, for the same tokens. A lenient second criterion, "overlap" (the peak
   patch's square shares any pixel with such a box), is reported beside it: with 16-pixel
   patches and objects of 21-35 pixels, a peak on a patch half covered by the object can have
   its centre just outside the box. "any object" (peak centre inside the box of any object of
   the scene, named or not) tells a map that finds the named object from one that finds
   objects at all, whatever the word.

Settings (what map is argmaxed), all over the noun tokens above:
- L<l>/H<h>: one head of one decoder layer (attention.npy)
- L<l>/mean, L<l>/max: mean over that layer's heads; elementwise max over its heads
- all/mean: mean over layers and heads; all/max: mean over layers of each layer's max over
  heads (as `xcap attend --layer all --head max`)
- rollout L<l>/mean, rollout all/mean: the same maps carried back to the input patches
  through the encoder (what `xcap attend --fusion rollout` draws)

Writes OUT/grounding.json (every accuracy with hits and count, the best setting, the `xcap`
flags that draw it, scene and token counts), OUT/tokens.jsonl (one line per scored noun token:
file, token, class, peak patch per setting) and prints the Markdown table for the model card;
--fill-card also writes it into weights/default/MODEL_CARD.md between `<!-- BEGIN grounding -->`
and `<!-- END grounding -->`.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

WEIGHTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(WEIGHTS)
WORLD_DIR = os.path.join(WEIGHTS, "world")
CARD = os.path.join(WEIGHTS, "default", "MODEL_CARD.md")
sys.path.insert(0, WORLD_DIR)

# Streams the trainer has seen or selected on (weights/train/train.py defaults).
TRAIN_SEED, VAL_SEED = 1, 1001


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------


def render_scenes(seed, count, out_dir):
    """The first `count` scenes of (seed, train) with two or more objects, written as
    scenes.py writes them (file named by stream index, same record). Returns the records
    and how many one-object scenes were skipped."""
    from world import DEFAULT_SIZE, World, public_record
    world = World(size=DEFAULT_SIZE)
    os.makedirs(out_dir, exist_ok=True)
    records, skipped, index = [], 0, 0
    with open(os.path.join(out_dir, "scenes.jsonl"), "w", encoding="utf-8") as jsonl:
        while len(records) < count:
            scene = world.scene(seed, index, "train")
            if len(scene["objects"]) < 2:
                skipped += 1
            else:
                name = f"{index:05d}.png"
                Image.fromarray(world.render(scene)).save(os.path.join(out_dir, name))
                record = {"file": name, **public_record(scene), "seed": seed, "split": "train",
                          "index": index, "size": DEFAULT_SIZE}
                jsonl.write(json.dumps(record) + "\n")
                records.append(record)
            index += 1
    return records, skipped


def noun_classes():
    """{word: class noun} for every noun and plural of the world, after checking that each
    is a single token (with its leading space) of the world's tokenizer."""
    with open(os.path.join(WORLD_DIR, "classes.json"), encoding="utf-8") as f:
        classes = json.load(f)
    with open(os.path.join(WORLD_DIR, "tokenizer", "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    words = {}
    for c in classes:
        for w in (c["noun"], c["plural"]):
            if "\u0120" + w not in vocab:   # GPT-2 byte mapping: U+0120 stands for the space
                sys.exit(f"' {w}' is not one token of weights/world/tokenizer; "
                         "token-to-word matching below assumes it is")
            words[w] = c["noun"]
    return words


# ------------------------------------------------------------------------------------------
# xcap passes
# ------------------------------------------------------------------------------------------


def run_pass(xcap, model, paths, maps_dir, flags, threads):
    """One `xcap caption --json --attention-dir` over all images. Returns {file: record} and
    {file: folder holding that image's attention.json}, and the seconds taken."""
    cmd = [xcap, "caption", "--json", "-m", model, "--attention-dir", maps_dir] + flags
    if threads:
        cmd += ["-t", str(threads)]
    t0 = time.time()
    proc = subprocess.run(cmd + paths, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:8])} ... exited with {proc.returncode}: {proc.stderr.strip()}")
    records = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        records[os.path.basename(r["file"])] = r
    folders = {}
    for p in paths:
        name = os.path.basename(p)
        # one image: DIR itself; several: DIR/<name without extension>/ (xcap caption --help)
        folders[name] = maps_dir if len(paths) == 1 else os.path.join(maps_dir, os.path.splitext(name)[0])
        if name not in records or not os.path.exists(os.path.join(folders[name], "attention.json")):
            sys.exit(f"{xcap}: no caption or attention.json for {p}")
    return records, folders, seconds


# ------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------


def patch_centres(rows, cols, width, height):
    """Centre of each patch (row-major) in image pixels: the image is stretched to the model
    input, so every patch covers width/cols x height/rows of the original image."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    return (c + 0.5) * width / cols, (r + 0.5) * height / rows


def patch_overlaps(rows, cols, width, height, boxes):
    """Boolean per patch (row-major): its square in image pixels shares a pixel with a box."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    px0, px1 = c * width / cols, (c + 1) * width / cols
    py0, py1 = r * height / rows, (r + 1) * height / rows
    hit = np.zeros(rows * cols, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        hit |= (px0 < x1) & (x0 < px1) & (py0 < y1) & (y0 < py1)
    return hit


def inside_any(x, y, boxes):
    """Boolean per point: inside one of the boxes [x0, y0, x1, y1] (x1, y1 exclusive)."""
    hit = np.zeros(np.shape(x), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        hit |= (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
    return hit


def npy_maps(att):
    """{setting: [tokens, memory] map} from one image's attention.npy [T, layers, heads, M].
    CLS is dropped later; renormalising after the drop does not move an argmax."""
    _, layers, heads, _ = att.shape
    maps = {}
    for l in range(layers):
        for h in range(heads):
            maps[f"L{l}/H{h}"] = att[:, l, h]
        maps[f"L{l}/mean"] = att[:, l].mean(axis=1)
        maps[f"L{l}/max"] = att[:, l].max(axis=1)
    # "all" is xcap's --layer all: the mean over layers of each layer's head choice
    maps["all/mean"] = att.mean(axis=(1, 2))
    maps["all/max"] = att.max(axis=2).mean(axis=1)
    return maps


def rollout_passes(layers, heads, per_head):
    """(setting, xcap flags) of the rollout passes."""
    passes = [(f"rollout L{l}/mean", ["--fusion", "rollout", "--layer", str(l), "--head", "mean"])
              for l in range(layers)]
    passes.append(("rollout all/mean", ["--fusion", "rollout", "--layer", "all", "--head", "mean"]))
    if per_head:
        passes += [(f"rollout L{l}/H{h}", ["--fusion", "rollout", "--layer", str(l), "--head", str(h)])
                   for l in range(layers) for h in range(heads)]
    return passes


def flags_of(setting):
    """The `xcap attend` flags that draw a setting."""
    rollout = setting.startswith("rollout ")
    layer, head = setting.split(" ")[-1].split("/")
    layer = "all" if layer == "all" else layer[1:]
    head = head[1:] if head.startswith("H") else head
    flags = f"--layer {layer} --head {head}"
    return flags + (" --fusion rollout" if rollout else " --fusion none")


def wilson(hits, n, z=1.96):
    if n == 0:
        return [None, None]
    p = hits / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return [round(centre - half, 4), round(centre + half, 4)]


def rate(hits, n):
    return {"hits": int(hits), "n": int(n), "accuracy": None if n == 0 else round(hits / n, 4),
            "ci95": wilson(hits, n)}


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def pct(r):
    return "–" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"


def markdown(result, layers, heads, per_head):
    acc = result["accuracy"]
    head_cols = [f"H{h}" for h in range(heads)]
    lines = ["| decoder layer | " + " | ".join(f"head {h}" for h in range(heads))
             + " | mean over heads | max over heads | rollout (mean over heads) |",
             "|---|" + "---|" * (heads + 3)]
    for l in range(layers):
        cells = [pct(acc[f"L{l}/{h}"]) for h in head_cols]
        cells += [pct(acc[f"L{l}/mean"]), pct(acc[f"L{l}/max"]), pct(acc[f"rollout L{l}/mean"])]
        lines.append(f"| {l} | " + " | ".join(cells) + " |")
    lines.append("| all (mean over layers) | " + " | ".join("" for _ in head_cols)
                 + f" | {pct(acc['all/mean'])} | {pct(acc['all/max'])} | "
                 f"{pct(acc['rollout all/mean'])} |")
    if per_head:
        lines += ["", "Rollout of single heads:", "",
                  "| decoder layer | " + " | ".join(f"head {h}" for h in range(heads)) + " |",
                  "|---|" + "---|" * heads]
        for l in range(layers):
            lines.append(f"| {l} | " + " | ".join(pct(acc[f"rollout L{l}/{h}"]) for h in head_cols) + " |")
    best = result["best"]
    c = result["counts"]
    lines += ["",
              f"Noun tokens scored: {c['scored']} in {c['scenes']} scenes with 2–3 objects "
              f"(seed {result['seed']}); hallucinated nouns (class not in the scene, not scored): "
              f"{c['hallucinated']}; chance (peak drawn uniformly over the patches): "
              f"{pct(result['chance'])}.",
              f"Best: **{best['setting']}** ({pct(acc[best['setting']])}, 95% CI "
              f"{100 * best['ci95'][0]:.1f}–{100 * best['ci95'][1]:.1f}%): `xcap attend {best['flags']}`."]
    ov = result["overlap"]["accuracy"]
    ov_best = max(ov, key=lambda k: (ov[k]["hits"], k.endswith("/mean")))
    lines.append(f"Lenient criterion (the peak patch's square touches the box; chance "
                 f"{100 * result['overlap']['chance']:.1f}%): {pct(ov[best['setting']])} for "
                 f"{best['setting']}; best {ov_best} ({pct(ov[ov_best])}).")
    anyo = result["any_object"]["accuracy"]
    lines.append(f"Peak on any object of the scene, named or not: {pct(anyo[best['setting']])} for "
                 f"{best['setting']}, {pct(anyo['rollout all/mean'])} for rollout all/mean "
                 "(a map that finds objects but not the one its word names scores high here only).")
    bm = result["best_mean_over_heads"]
    if bm["setting"] != best["setting"]:
        lines.append(f"Best mean over heads: **{bm['setting']}** ({pct(bm)}): `xcap attend {bm['flags']}`.")
    return "\n".join(lines)


def fill_card(table, result):
    """Replaces the card's grounding block (the same block convention as
    weights/default/make_card_tables.py)."""
    with open(CARD, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(r"(<!-- BEGIN grounding -->\n).*?(<!-- END grounding -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"{CARD}: no <!-- BEGIN grounding --> ... <!-- END grounding --> block")
    model = result["model"]
    if model.startswith(REPO + os.sep):
        model = os.path.relpath(model, REPO)
    body = (f"Model `{model}` (model.safetensors SHA-256 `{result['model_sha256'][:16]}…`), "
            f"seed {result['seed']}, {result['counts']['scenes']} scenes:\n\n{table}\n")
    text = pattern.sub(lambda m: m[1] + body + m[2], text)
    with open(CARD, "w", encoding="utf-8") as f:
        f.write(text)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Grounding accuracy of the decoder's cross-attention "
                                 "on fresh world scenes, with the C binary.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seed", type=int, required=True,
                    help=f"scene stream; not {TRAIN_SEED} (training) or {VAL_SEED} (validation)")
    ap.add_argument("--count", type=int, required=True, help="scenes with two or more objects")
    ap.add_argument("--model", default=os.path.join(REPO, "weights", "default"))
    ap.add_argument("--xcap", default=os.path.join(REPO, "build", "xcap"))
    ap.add_argument("--out", default=None, help="working folder (default /tmp/xcap-grounding-sSEED-nN)")
    # One thread: on this shared 2-core machine (a training job beside it) xcap's default
    # threads made captioning 16x slower (0.3 s against 0.02 s per scene, measured).
    ap.add_argument("--threads", type=int, default=1, help="threads for xcap (-t); 0 = its default")
    ap.add_argument("--rollout-heads", action="store_true",
                    help="also roll out every single head (one xcap pass per layer and head)")
    ap.add_argument("--keep-maps", action="store_true",
                    help="keep the attention folders (PNG, JSON, npy) of every pass")
    ap.add_argument("--fill-card", action="store_true",
                    help="write the table into weights/default/MODEL_CARD.md (grounding block)")
    args = ap.parse_args(argv)
    if args.seed in (TRAIN_SEED, VAL_SEED):
        ap.error(f"--seed {args.seed}: the trainer uses seed {TRAIN_SEED} for training and "
                 f"{VAL_SEED} for validation; measure on another stream")
    if args.count <= 0 or args.seed < 0:
        ap.error("--count must be positive and --seed not negative")
    for what, path in (("--model", args.model), ("--xcap", args.xcap)):
        if not os.path.exists(path):
            ap.error(f"{what} {path}: not found")
    if args.out is None:
        args.out = f"/tmp/xcap-grounding-s{args.seed}-n{args.count}"
    return args


def main(argv=None):
    args = parse_args(argv)
    words = noun_classes()
    scene_dir = os.path.join(args.out, "scenes")
    t0 = time.time()
    records, skipped = render_scenes(args.seed, args.count, scene_dir)
    seconds = {"render": round(time.time() - t0, 2)}
    paths = [os.path.join(scene_dir, r["file"]) for r in records]

    # Pass 1: captions and every layer and head (attention.npy).
    maps_root = os.path.join(args.out, "maps")
    shutil.rmtree(maps_root, ignore_errors=True)
    os.makedirs(maps_root)
    captions, base_dirs, s = run_pass(args.xcap, args.model, paths, os.path.join(maps_root, "none"), [],
                                      args.threads)
    seconds["xcap none"] = round(s, 2)
    first = json.load(open(os.path.join(base_dirs[records[0]["file"]], "attention.json"), encoding="utf-8"))
    _, layers, heads, n_memory = first["attention"]["shape"]
    rows, cols = first["patch_grid"]["rows"], first["patch_grid"]["cols"]
    if rows * cols + 1 != n_memory:
        sys.exit(f"attention.json: {rows}x{cols} patches + CLS != {n_memory} memory tokens")

    # Rollout passes: the drawn maps of attention.json.
    rollout_dirs = {}
    for setting, flags in rollout_passes(layers, heads, args.rollout_heads):
        other, dirs, s = run_pass(args.xcap, args.model, paths, os.path.join(maps_root, setting.replace(" ", "_").replace("/", "_")),
                                  flags, args.threads)
        seconds[f"xcap {setting}"] = round(s, 2)
        for name, r in other.items():
            if r["tokens"] != captions[name]["tokens"]:
                sys.exit(f"{name}: pass '{setting}' captioned it differently; decoding must not "
                         "depend on what is drawn")
        rollout_dirs[setting] = dirs

    hits, overlaps, on_any, n_scored, hallucinated, chance, chance_overlap = {}, {}, {}, 0, 0, 0.0, 0.0
    checked_default = 0
    tokens_out = open(os.path.join(args.out, "tokens.jsonl"), "w", encoding="utf-8")
    for record in records:
        name = record["file"]
        meta = json.load(open(os.path.join(base_dirs[name], "attention.json"), encoding="utf-8"))
        att = np.load(os.path.join(base_dirs[name], "attention.npy"))
        maps = npy_maps(att)
        # The drawn map of the first pass (xcap's default choice) must be one of ours: this
        # checks that our reading of the array's axes is xcap's.
        drawn = meta["drawn"]
        key = (("all" if drawn["layer"] == "all" else f"L{drawn['layer']}") + "/"
               + (drawn["head"] if isinstance(drawn["head"], str) else f"H{drawn['head']}"))
        if drawn["fusion"] == "none" and key in maps:
            ours = maps[key][:, 1:]
            ours = ours / ours.sum(axis=1, keepdims=True)
            theirs = np.array(meta["maps"]["tokens"], dtype=np.float64).reshape(len(ours), -1)
            if not np.allclose(ours, theirs, atol=1e-4):
                sys.exit(f"{name}: attention.npy disagrees with the map xcap drew ({drawn['description']})")
            checked_default += 1
        for setting, dirs in rollout_dirs.items():
            m = json.load(open(os.path.join(dirs[name], "attention.json"), encoding="utf-8"))["maps"]["tokens"]
            maps[setting] = np.concatenate([np.zeros((len(m), 1)), np.array(m, dtype=np.float64).reshape(len(m), -1)], axis=1)
        width, height = meta["image_size"]["width"], meta["image_size"]["height"]
        cx, cy = patch_centres(rows, cols, width, height)
        for tok in meta["tokens"]:
            word = tok["text"].strip()
            if word not in words:
                continue
            noun = words[word]
            boxes = [o["box"] for o in record["objects"] if o["noun"] == noun]
            if not boxes:
                hallucinated += 1
                continue
            in_box = inside_any(cx, cy, boxes)
            touching = patch_overlaps(rows, cols, width, height, boxes)
            any_box = inside_any(cx, cy, [o["box"] for o in record["objects"]])
            chance_overlap += touching.mean()
            n_scored += 1
            chance += in_box.mean()
            peaks = {}
            for setting, m in maps.items():
                peak = int(np.argmax(m[tok["index"], 1:]))
                peaks[setting] = peak
                hits[setting] = hits.get(setting, 0) + bool(in_box[peak])
                overlaps[setting] = overlaps.get(setting, 0) + bool(touching[peak])
                on_any[setting] = on_any.get(setting, 0) + bool(any_box[peak])
            tokens_out.write(json.dumps({"file": name, "token": tok["index"], "word": word, "class": noun,
                                         "caption": captions[name]["caption"], "peaks": peaks}) + "\n")
    tokens_out.close()
    if n_scored == 0:
        sys.exit("no noun token named an object of its scene: nothing to score")

    accuracy = {k: rate(v, n_scored) for k, v in hits.items()}
    # Ties go to a mean over heads: it is the kind of map issue 6 makes the default.
    best = max(accuracy, key=lambda k: (accuracy[k]["hits"], k.endswith("/mean")))
    best_mean = max((k for k in accuracy if k.endswith("/mean")), key=lambda k: accuracy[k]["hits"])
    exact = sum(captions[r["file"]]["caption"] == r["caption"] for r in records)
    result = {
        "model": os.path.abspath(args.model),
        "model_sha256": sha256_of(os.path.join(args.model, "model.safetensors")),
        "xcap": os.path.abspath(args.xcap),
        "seed": args.seed, "split": "train",
        "decoding": "the model's generation_config.json (no decoding flags)",
        "counts": {"scenes": len(records), "one_object_scenes_skipped": skipped,
                   "exact_captions": exact, "scored": n_scored, "hallucinated": hallucinated,
                   "default_map_checked": checked_default},
        "grid": {"rows": rows, "cols": cols, "layers": layers, "heads": heads},
        "chance": {"accuracy": round(chance / n_scored, 4)},
        "overlap": {"rule": "the peak patch's square shares a pixel with a box of the class",
                    "chance": round(chance_overlap / n_scored, 4),
                    "accuracy": {k: rate(v, n_scored) for k, v in overlaps.items()}},
        "any_object": {"rule": "the peak patch's centre lies in the box of any object of the scene",
                       "accuracy": {k: rate(v, n_scored) for k, v in on_any.items()}},
        "accuracy": accuracy,
        "best": {"setting": best, "flags": flags_of(best), **accuracy[best]},
        "best_mean_over_heads": {"setting": best_mean, "flags": flags_of(best_mean), **accuracy[best_mean]},
        "seconds": seconds,
    }
    with open(os.path.join(args.out, "grounding.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if not args.keep_maps:
        shutil.rmtree(maps_root, ignore_errors=True)
    table = markdown(result, layers, heads, args.rollout_heads)
    print(table)
    if args.fill_card:
        fill_card(table, result)
    print(f"\n{len(records)} scenes ({exact} captioned exactly), {n_scored} noun tokens; "
          f"wrote {os.path.join(args.out, 'grounding.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
