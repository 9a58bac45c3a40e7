"""Chooses the held-out class pairs: unordered pairs of classes that never appear together in a
training scene (GRAMMAR.md "Held-out pairs"), and writes heldout_pairs.json.

    /usr/bin/python3 weights/world/make_heldout.py

Deterministic: a fixed seed and the class order of classes.json. Rerun it only when the class
list changes (and retrain: the list is part of what the default model was trained on).
"""

import json
import math
import os

import numpy as np

WORLD_DIR = os.path.dirname(os.path.abspath(__file__))
SEED = 5           # issue 5
FRACTION = 0.05    # at least this share of all unordered pairs


def main():
    with open(os.path.join(WORLD_DIR, "classes.json"), encoding="utf-8") as f:
        nouns = [c["noun"] for c in json.load(f)]
    pairs = [(a, b) for i, a in enumerate(nouns) for b in nouns[i + 1:]]
    count = math.ceil(FRACTION * len(pairs))
    chosen = np.random.default_rng(SEED).choice(len(pairs), size=count, replace=False)
    held = sorted(pairs[int(k)] for k in chosen)
    out = {
        "comment": (f"{count} of the {len(pairs)} unordered pairs of the {len(nouns)} classes "
                    f"(>= {FRACTION:.0%}), chosen by make_heldout.py with seed {SEED}. "
                    "No training scene contains both classes of a pair; "
                    "scenes.py --split heldout draws only these pairs."),
        "seed": SEED,
        "pairs": [list(p) for p in held],
    }
    with open(os.path.join(WORLD_DIR, "heldout_pairs.json"), "w", encoding="utf-8") as f:
        f.write("{\n")
        f.write(f'  "comment": {json.dumps(out["comment"])},\n')
        f.write(f'  "seed": {SEED},\n')
        f.write('  "pairs": [\n')
        f.write(",\n".join("    " + json.dumps(p) for p in out["pairs"]))
        f.write("\n  ]\n}\n")
    print(f"{count} held-out pairs of {len(pairs)}")


if __name__ == "__main__":
    main()
