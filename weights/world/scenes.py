"""Writes scenes of the world as PNG files with their captions.

    /usr/bin/python3 weights/world/scenes.py --seed S --count N --out DIR \
        [--split train|heldout] [--emoji-dir DIR] [--size PX] [--start I]

DIR/NNNNN.png (scene I of the stream gets the name I, five digits or more) and DIR/scenes.jsonl,
one JSON object per line: file, caption, background {name, rgb}, objects [{noun, code_point,
box [x0, y0, x1, y1] in pixels, x1/y1 exclusive}] in the order the caption names them, and seed,
split, index, size. The same arguments always write the same bytes.
"""

import argparse
import json
import os
import sys

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from world import DEFAULT_SIZE, SPLITS, World, public_record  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Render scenes of the xcap world with captions.")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--split", choices=sorted(SPLITS), default="train",
                    help="train: no held-out pair together; heldout: only held-out pairs")
    ap.add_argument("--emoji-dir", default=None,
                    help="another artist's emoji PNGs named like the committed ones "
                         "(e.g. node_modules/emoji-datasource-twitter/img/twitter/64)")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
    ap.add_argument("--start", type=int, default=0, help="index of the first scene")
    args = ap.parse_args(argv)
    if args.count < 0 or args.start < 0 or args.seed < 0:
        ap.error("--seed, --count and --start must not be negative")

    world = World(size=args.size, emoji_dir=args.emoji_dir)
    os.makedirs(args.out, exist_ok=True)
    digits = max(5, len(str(args.start + args.count - 1)))
    with open(os.path.join(args.out, "scenes.jsonl"), "w", encoding="utf-8") as jsonl:
        for index in range(args.start, args.start + args.count):
            scene = world.scene(args.seed, index, args.split)
            name = f"{index:0{digits}d}.png"
            Image.fromarray(world.render(scene)).save(os.path.join(args.out, name))
            record = {"file": name, **public_record(scene),
                      "seed": args.seed, "split": args.split, "index": index, "size": args.size}
            jsonl.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
