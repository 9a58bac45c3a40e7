"""Copies the emoji pictures that classes.json names from the npm package
`emoji-datasource-google` into weights/world/emoji/, re-encoded as small RGBA PNGs.

    /usr/bin/python3 weights/world/import_emoji.py \
        --package /tmp/npmfx/node_modules/emoji-datasource-google

The pictures are the Noto emoji (Apache-2.0); the package itself is MIT. The re-encoding only
drops PNG chunks and recompresses: the pixels are the package's, bit for bit (checked below).
Also writes emoji/NOTICE with the package name and version.
"""

import argparse
import io
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

WORLD_DIR = os.path.dirname(os.path.abspath(__file__))
APACHE_LICENSE = "/usr/share/common-licenses/Apache-2.0"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True, help="emoji-datasource-google package directory")
    ap.add_argument("--out", default=os.path.join(WORLD_DIR, "emoji"))
    args = ap.parse_args()

    with open(os.path.join(args.package, "package.json"), encoding="utf-8") as f:
        package = json.load(f)
    with open(os.path.join(args.package, "emoji.json"), encoding="utf-8") as f:
        by_unified = {e["unified"]: e for e in json.load(f)}
    with open(os.path.join(WORLD_DIR, "classes.json"), encoding="utf-8") as f:
        classes = json.load(f)

    os.makedirs(args.out, exist_ok=True)
    total = 0
    for cls in classes:
        entry = by_unified.get(cls["code_point"])
        if entry is None or not entry.get("has_img_google"):
            sys.exit(f"{cls['noun']}: code point {cls['code_point']} has no Google image in the package")
        if entry["image"] != cls["image"]:
            sys.exit(f"{cls['noun']}: package names the image {entry['image']}, classes.json {cls['image']}")
        src = os.path.join(args.package, "img", "google", "64", entry["image"])
        pixels = np.asarray(Image.open(src).convert("RGBA"))
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGBA").save(buf, format="PNG", optimize=True)
        if not np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGBA")), pixels):
            sys.exit(f"{src}: re-encoded pixels differ")
        with open(os.path.join(args.out, cls["image"]), "wb") as f:
            f.write(buf.getvalue())
        total += len(buf.getvalue())

    shutil.copyfile(APACHE_LICENSE, os.path.join(args.out, "LICENSE"))
    with open(os.path.join(args.out, "NOTICE"), "w", encoding="utf-8") as f:
        f.write(
            f"The {len(classes)} PNG images in this folder are Noto Color Emoji pictures by Google,\n"
            "licensed under the Apache License, Version 2.0 (the LICENSE file here;\n"
            "https://github.com/googlefonts/noto-emoji/blob/main/LICENSE).\n\n"
            f"They were taken, 64x64 px, from the npm package {package['name']} {package['version']}\n"
            f"({package.get('homepage', '')}; the package's data and code are MIT,\n"
            "Copyright (c) 2013 Cal Henderson), file img/google/64/<image>, and re-encoded\n"
            "losslessly (same pixels, smaller PNG) by weights/world/import_emoji.py.\n"
            "Each file is named as in that package: the emoji's `unified` code point sequence,\n"
            "lower case, e.g. 1f415.png for U+1F415 DOG.\n")
    print(f"{len(classes)} images, {total} bytes, into {args.out}")


if __name__ == "__main__":
    main()
