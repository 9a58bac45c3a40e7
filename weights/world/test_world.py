"""Checks of the scene world against GRAMMAR.md. Run: /usr/bin/python3 weights/world/test_world.py

Needs numpy and PIL only (not part of ctest, which runs without Python packages). Prints one line
per check and "N passed, N failed"; exits non-zero on a failure.
"""

import filecmp
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from world import World, boxes_apart, left_to_right, relation  # noqa: E402

RESULTS = {"passed": 0, "failed": 0}


def check(cond, what):
    RESULTS["passed" if cond else "failed"] += 1
    if not cond:
        print(f"FAIL {what}")
    return cond


NOUN = r"([a-z]+)"
PATTERNS = [
    ("single", re.compile(rf"^(a|an) {NOUN}$")),
    ("pair_same", re.compile(rf"^two {NOUN}$")),
    ("relation", re.compile(rf"^(a|an) {NOUN} (left of|above) (a|an) {NOUN}$")),
    ("triple_same", re.compile(rf"^three {NOUN}$")),
    ("two_and_one", re.compile(rf"^two {NOUN} and (a|an) {NOUN}$")),
    ("three_distinct", re.compile(rf"^(a|an) {NOUN}, (a|an) {NOUN} and (a|an) {NOUN}$")),
]


def parse(caption):
    m = re.match(r"^(.*) on (a|an) ([a-z]+) background$", caption)
    if not m:
        return None
    for kind, pat in PATTERNS:
        pm = pat.match(m.group(1))
        if pm:
            return kind, pm.groups(), m.group(2), m.group(3)
    return None


def check_scene(world, scene, split, tag):
    cls = world.classes
    by_noun = {c["noun"]: c for c in cls}
    objs = scene["objects"]
    size = world.size
    ok = True
    parsed = parse(scene["caption"])
    ok &= check(parsed is not None, f"{tag}: caption {scene['caption']!r} fits the grammar")
    if parsed is None:
        return None
    kind, groups, bg_article, colour = parsed
    ok &= check(colour == scene["background"]["name"], f"{tag}: colour word")
    ok &= check(bg_article == ("an" if colour == "orange" else "a"), f"{tag}: colour article")
    nominal = next(c["rgb"] for c in world.colours if c["name"] == colour)
    ok &= check(all(abs(a - b) <= 12 for a, b in zip(scene["background"]["rgb"], nominal)),
                f"{tag}: background jitter within 12")
    for o in objs:
        x0, y0, x1, y1 = o["box"]
        ok &= check(0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, f"{tag}: box inside")
        ok &= check(x1 - x0 == y1 - y0 and world.side_min <= x1 - x0 <= world.side_max,
                    f"{tag}: square box of allowed side")
        k = next(i for i, c in enumerate(world.colours) if c["name"] == colour)
        ok &= check(k in world.allowed_colours[world.noun_index[o["noun"]]],
                    f"{tag}: {o['noun']} stands out from {colour}")
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            ok &= check(boxes_apart(objs[i]["box"], objs[j]["box"]), f"{tag}: no overlap")
    nouns = [o["noun"] for o in objs]
    ids = [world.noun_index[n] for n in nouns]
    if split == "train":
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                ok &= check(frozenset((ids[i], ids[j])) not in world.heldout or ids[i] == ids[j],
                            f"{tag}: no held-out pair in a training scene")
    else:
        ok &= check(kind in ("relation", "two_and_one"), f"{tag}: held-out scene kind")
        ok &= check(frozenset(ids) in world.heldout, f"{tag}: held-out scene uses a held-out pair")

    def art_noun(article, noun):
        c = by_noun.get(noun)
        return c is not None and c["article"] == article

    if kind == "single":
        ok &= check(len(objs) == 1 and art_noun(groups[0], groups[1]) and nouns == [groups[1]],
                    f"{tag}: single object named")
    elif kind in ("pair_same", "triple_same"):
        n = 2 if kind == "pair_same" else 3
        ok &= check(len(objs) == n and len(set(nouns)) == 1 and
                    by_noun[nouns[0]]["plural"] == groups[0], f"{tag}: count and plural")
    elif kind == "relation":
        a1, n1, word, a2, n2 = groups
        ok &= check(len(objs) == 2 and nouns == [n1, n2] and n1 != n2 and
                    art_noun(a1, n1) and art_noun(a2, n2), f"{tag}: relation nouns and articles")
        rel = relation(objs[0]["box"], objs[1]["box"])
        ok &= check(rel == (word, 0, 1), f"{tag}: relation {word!r} with the first object "
                                         f"left/top (found {rel})")
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = objs[0]["box"], objs[1]["box"]
        if word == "left of":
            ok &= check(ax1 <= bx0, f"{tag}: left object entirely left")
        else:
            ok &= check(ay1 <= by0, f"{tag}: top object entirely above")
    elif kind == "two_and_one":
        plural, article, single = groups
        ok &= check(len(objs) == 3 and nouns.count(nouns[0]) == 2 and nouns[2] == single and
                    by_noun[nouns[0]]["plural"] == plural and art_noun(article, single) and
                    nouns[0] != single, f"{tag}: two and one")
    elif kind == "three_distinct":
        named = [groups[1], groups[3], groups[5]]
        ok &= check(len(set(named)) == 3 and nouns == named and
                    all(art_noun(groups[2 * k], groups[2 * k + 1]) for k in range(3)),
                    f"{tag}: three distinct nouns")
        ok &= check(left_to_right([o["box"] for o in objs]) == [0, 1, 2],
                    f"{tag}: named left to right")
    return kind


def test_grammar_and_distribution():
    for size in (96, 64):
        world = World(size=size)
        kinds = {}
        for index in range(3000):
            scene = world.scene(11, index, "train")
            kind = check_scene(world, scene, "train", f"size {size} train #{index}")
            kinds[kind] = kinds.get(kind, 0) + 1
        for index in range(600):
            check_scene(world, world.scene(11, index, "heldout"), "heldout",
                        f"size {size} heldout #{index}")
        expected = {"single": 1 / 3, "pair_same": 0.25 / 3, "relation": 0.75 / 3,
                    "triple_same": 0.15 / 3, "two_and_one": 0.35 / 3, "three_distinct": 0.5 / 3}
        for kind, p in expected.items():
            got = kinds.get(kind, 0) / 3000
            check(abs(got - p) < 4 * np.sqrt(p * (1 - p) / 3000) + 0.005,
                  f"size {size}: share of {kind} {got:.3f} vs {p:.3f}")
    print(f"grammar: scene kinds at 64 px {kinds}")


def test_relation_balance():
    world = World()
    words = {"left of": 0, "above": 0}
    for index in range(4000):
        m = re.search(r" (left of|above) ", world.scene(3, index)["caption"])
        if m:
            words[m.group(1)] += 1
    total = sum(words.values())
    check(abs(words["left of"] / total - 0.5) < 0.05, f"relations balanced {words}")


def test_same_stream_same_scene():
    a, b = World(), World()
    for index in (0, 1, 17, 999, 123456):
        sa, sb = a.scene(7, index), b.scene(7, index)
        check(sa == sb, f"scene {index} is a function of (seed, index)")
        check(np.array_equal(a.render(sa), b.render(sb)), f"scene {index} renders identically")
    check(a.scene(7, 5) != a.scene(8, 5), "another seed gives another scene")
    check(a.scene(7, 5, "train") != a.scene(7, 5, "heldout"), "the split is part of the stream")
    images, scenes = a.batch(7, 15, 4)
    check(scenes == [a.scene(7, i) for i in range(15, 19)], "batch = scenes start..start+count-1")
    small, _ = a.batch(7, 15, 4, out_size=64)
    check(small.shape == (4, 64, 64, 3) and small.dtype == np.uint8, "batch resized to out_size")


def test_render_pixels():
    world = World()
    scene = world.scene(2, 0)
    img = world.render(scene)
    rgb = np.asarray(scene["background"]["rgb"], np.uint8)
    mask = np.ones(img.shape[:2], bool)
    for o in scene["objects"]:
        x0, y0, x1, y1 = o["box"]
        mask[y0:y1, x0:x1] = False
        inside = img[y0:y1, x0:x1].reshape(-1, 3)
        check((np.abs(inside.astype(int) - rgb).sum(1) > 30).mean() > 0.3,
              f"object {o['noun']} is drawn in its box")
    check(np.all(img[mask] == rgb), "pixels outside the boxes are the background colour")


def test_scenes_command():
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for name in ("one", "two"):
            out = os.path.join(tmp, name)
            subprocess.run([sys.executable, os.path.join(HERE, "scenes.py"), "--seed", "9",
                            "--count", "6", "--out", out], check=True)
            runs.append(out)
        files = sorted(os.listdir(runs[0]))
        check(files == [f"{i:05d}.png" for i in range(6)] + ["scenes.jsonl"], f"files {files}")
        match, mismatch, errors = filecmp.cmpfiles(runs[0], runs[1], files, shallow=False)
        check(not mismatch and not errors, "same seed -> byte-identical files")
        records = [json.loads(line) for line in open(os.path.join(runs[0], "scenes.jsonl"))]
        world = World()
        check(all(r["caption"] == world.scene(9, i)["caption"] for i, r in enumerate(records)),
              "scenes.jsonl captions = the API's")
        check(set(records[0]) >= {"file", "caption", "objects", "background"} and
              set(records[0]["objects"][0]) == {"noun", "code_point", "box"}, "jsonl fields")
        held = os.path.join(tmp, "held")
        subprocess.run([sys.executable, os.path.join(HERE, "scenes.py"), "--seed", "9",
                        "--count", "4", "--out", held, "--split", "heldout", "--size", "64"],
                       check=True)
        records = [json.loads(line) for line in open(os.path.join(held, "scenes.jsonl"))]
        check(all(frozenset(world.noun_index[o["noun"]] for o in r["objects"]) in world.heldout
                  for r in records), "--split heldout writes held-out pairs")


def test_heldout_list():
    world = World()
    n = len(world.classes)
    check(len(world.classes) >= 100, f"{n} classes")
    check(len(world.heldout) >= 0.05 * n * (n - 1) / 2, f"{len(world.heldout)} held-out pairs")
    check(all(len(p) == 2 for p in world.heldout), "held-out pairs are pairs of classes")
    check(len({c["noun"] for c in world.classes}) == n and
          len({c["code_point"] for c in world.classes}) == n, "nouns and code points unique")


def main():
    for test in (test_heldout_list, test_same_stream_same_scene, test_render_pixels,
                 test_relation_balance, test_grammar_and_distribution, test_scenes_command):
        test()
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
