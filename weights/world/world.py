"""The scene world of xcap's default model: scenes of 1-3 emoji objects on a coloured
background, each with exactly one caption. GRAMMAR.md states the rules; this module is them.

Python API (numpy + PIL only):

    w = World(size=96)                               # committed emoji, 96x96 scenes
    scene = w.scene(seed, index, split="train")      # a dict: caption, background, objects
    pixels = w.render(scene)                         # uint8 [size, size, 3]
    images, scenes = w.batch(seed, start, count)     # uint8 [count, H, W, 3] + list of dicts

A scene is a pure function of (seed, index, split, size): the trainer draws scene i of its stream
without drawing scenes 0..i-1, so a resumed run continues the same stream. Another artist's
emoji (`emoji_dir`) change only the pixels of the objects, never the scene or its caption.
"""

import json
import os

import numpy as np
from PIL import Image

WORLD_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SIZE = 96

SPLITS = {"train": 0, "heldout": 1}

# Object side, as a fraction of the image side (GRAMMAR.md "Layout").
SIDE_MIN, SIDE_MAX = 0.22, 0.36
MIN_GAP = 2            # pixels between two object squares, in x or in y
AXIS_RATIO = 2         # relation scenes: the main-axis centre distance is >= 2x the other one
BG_JITTER = 12         # background RGB jitter, +-, per channel

# A class is never drawn on a background it does not stand out from: at least half of its
# opaque pixels must be farther than this (Euclidean RGB) from the nominal background colour.
CONTRAST_DISTANCE = 64.0
CONTRAST_MIN_FRACTION = 0.5

# Scene kinds and their probabilities (GRAMMAR.md "Scene distribution").
KINDS_BY_COUNT = {
    1: (("single", 1.0),),
    2: (("pair_same", 0.25), ("pair_relation", 0.75)),
    3: (("triple_same", 0.15), ("two_and_one", 0.35), ("three_distinct", 0.5)),
}
HELDOUT_KINDS = (("pair_relation", 0.5), ("two_and_one", 0.5))

NUMBER_WORDS = {2: "two", 3: "three"}


def _load_json(name, world_dir):
    with open(os.path.join(world_dir, name), encoding="utf-8") as f:
        return json.load(f)


def scene_rng(seed, index, split):
    """The random stream of one scene: independent of every other (seed, index, split)."""
    return np.random.default_rng([int(seed), int(index), SPLITS[split]])


def centre2(box):
    """Twice the centre of a box [x0, y0, x1, y1) (end exclusive): integers, no rounding."""
    return box[0] + box[2], box[1] + box[3]


def boxes_apart(a, b, gap=MIN_GAP):
    """True when two boxes leave at least `gap` pixels between them in x or in y."""
    return (a[2] + gap <= b[0] or b[2] + gap <= a[0] or
            a[3] + gap <= b[1] or b[3] + gap <= a[1])


def relation(a, b):
    """The relation of two distinct-class objects, as GRAMMAR.md defines it: ("left of", first,
    second) or ("above", first, second) with first/second indexes 0 (a) or 1 (b); None when the
    layout is ambiguous and therefore not in the world."""
    (ax, ay), (bx, by) = centre2(a), centre2(b)
    dx, dy = abs(ax - bx), abs(ay - by)
    x_disjoint = a[2] <= b[0] or b[2] <= a[0]
    y_disjoint = a[3] <= b[1] or b[3] <= a[1]
    if x_disjoint and dx >= AXIS_RATIO * dy:
        return ("left of", 0, 1) if ax < bx else ("left of", 1, 0)
    if y_disjoint and dy >= AXIS_RATIO * dx:
        return ("above", 0, 1) if ay < by else ("above", 1, 0)
    return None


def left_to_right(boxes):
    """Indexes of three boxes ordered by centre x, or None when two neighbours' centres are
    closer than half the larger side (the order would not be clear to a viewer)."""
    order = sorted(range(len(boxes)), key=lambda i: centre2(boxes[i])[0])
    for i, j in zip(order, order[1:]):
        gap2 = centre2(boxes[j])[0] - centre2(boxes[i])[0]
        larger = max(boxes[i][2] - boxes[i][0], boxes[j][2] - boxes[j][0])
        if gap2 < larger:   # gap2 is twice the centre gap; compare with 2 * larger / 2
            return None
    return order


class World:
    def __init__(self, size=DEFAULT_SIZE, emoji_dir=None, world_dir=WORLD_DIR):
        if size < 32:
            raise ValueError(f"image size {size}: at least 32 pixels are needed")
        self.size = int(size)
        self.classes = _load_json("classes.json", world_dir)
        self.colours = _load_json("colours.json", world_dir)
        self.noun_index = {c["noun"]: i for i, c in enumerate(self.classes)}
        self.heldout = set()
        for a, b in _load_json("heldout_pairs.json", world_dir)["pairs"]:
            self.heldout.add(frozenset((self.noun_index[a], self.noun_index[b])))
        self.heldout_list = sorted(tuple(sorted(p)) for p in self.heldout)

        committed = [self._load_emoji(os.path.join(world_dir, "emoji"), c) for c in self.classes]
        self.emoji = committed if emoji_dir is None else [
            self._load_emoji(emoji_dir, c) for c in self.classes]
        # Always from the committed pictures, so another artist's set draws the same scenes.
        self.allowed_colours = [self._contrasting_colours(p) for p in committed]
        self._sprites = {}
        self.side_min = int(round(SIDE_MIN * self.size))
        self.side_max = int(round(SIDE_MAX * self.size))

    @staticmethod
    def _load_emoji(folder, cls):
        path = os.path.join(folder, cls["image"])
        if not os.path.exists(path):
            upper = os.path.join(folder, cls["code_point"] + ".png")
            if os.path.exists(upper):
                path = upper
            else:
                raise FileNotFoundError(f"{path}: no picture for class {cls['noun']}")
        with Image.open(path) as im:
            return im.convert("RGBA")

    def _contrasting_colours(self, picture):
        rgba = np.asarray(picture, dtype=np.float64)
        opaque = rgba[rgba[..., 3] >= 128][:, :3]
        allowed = []
        for k, colour in enumerate(self.colours):
            dist = np.sqrt(((opaque - np.asarray(colour["rgb"], np.float64)) ** 2).sum(axis=1))
            if (dist > CONTRAST_DISTANCE).mean() >= CONTRAST_MIN_FRACTION:
                allowed.append(k)
        return allowed

    # --- sampling --------------------------------------------------------------------------
    def scene(self, seed, index, split="train"):
        return self.sample(scene_rng(seed, index, split), split)

    def sample(self, rng, split="train"):
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {sorted(SPLITS)}")
        while True:
            kind, classes = self._sample_classes(rng, split)
            colours = set(range(len(self.colours)))
            for c in classes:
                colours &= set(self.allowed_colours[c])
            if colours:
                break
        colour = sorted(colours)[rng.integers(len(colours))]
        boxes = self._sample_layout(rng, kind, len(classes))
        base = np.asarray(self.colours[colour]["rgb"], np.int64)
        rgb = np.clip(base + rng.integers(-BG_JITTER, BG_JITTER + 1, size=3), 0, 255)
        return self.describe(classes, boxes, colour, [int(v) for v in rgb])

    def _pick_kind(self, rng, table):
        r = rng.random()
        for kind, p in table:
            if r < p:
                return kind
            r -= p
        return table[-1][0]

    def _sample_classes(self, rng, split):
        n_cls = len(self.classes)
        if split == "heldout":
            kind = self._pick_kind(rng, HELDOUT_KINDS)
            a, b = self.heldout_list[rng.integers(len(self.heldout_list))]
            if rng.integers(2):
                a, b = b, a
            return kind, ([a, b] if kind == "pair_relation" else [a, a, b])
        count = int(rng.integers(1, 4))
        kind = self._pick_kind(rng, KINDS_BY_COUNT[count])
        while True:
            distinct = {"single": 1, "pair_same": 1, "pair_relation": 2, "triple_same": 1,
                        "two_and_one": 2, "three_distinct": 3}[kind]
            picked = [int(c) for c in rng.choice(n_cls, size=distinct, replace=False)]
            pairs = [frozenset((x, y)) for i, x in enumerate(picked) for y in picked[i + 1:]]
            if not any(p in self.heldout for p in pairs):
                break
        if kind == "pair_same":
            return kind, picked * 2
        if kind == "triple_same":
            return kind, picked * 3
        if kind == "two_and_one":
            return kind, [picked[0], picked[0], picked[1]]
        return kind, picked

    def _sample_layout(self, rng, kind, count):
        """Rejection sampling of squares that lie inside the image, keep MIN_GAP between them
        and, for relation and left-to-right scenes, are unambiguous (GRAMMAR.md "Layout")."""
        span = self.side_max - self.side_min + 1
        for _ in range(10000):
            # One uniform draw per number: float64 multiply and floor give the same integers on
            # every IEEE machine, and one call per attempt is ~10x cheaper than integers().
            u = rng.random(3 * count).tolist()
            boxes = []
            for k in range(count):
                side = self.side_min + int(u[3 * k] * span)
                x = int(u[3 * k + 1] * (self.size - side + 1))
                y = int(u[3 * k + 2] * (self.size - side + 1))
                boxes.append([x, y, x + side, y + side])
            if not all(boxes_apart(boxes[i], boxes[j])
                       for i in range(count) for j in range(i + 1, count)):
                continue
            if kind == "pair_relation" and relation(boxes[0], boxes[1]) is None:
                continue
            if kind == "three_distinct" and left_to_right(boxes) is None:
                continue
            return boxes
        raise RuntimeError(f"no layout found for a {kind} scene at size {self.size}")

    # --- the caption -----------------------------------------------------------------------
    def describe(self, classes, boxes, colour, rgb):
        """The scene record with its one caption, computed from classes, boxes and background
        alone (so anyone holding a scene's objects can check its caption). Objects are listed in
        the order the caption names them."""
        cls = self.classes
        order = list(range(len(classes)))
        distinct = sorted(set(classes), key=classes.index)
        if len(classes) == 1:
            phrase = f"{cls[classes[0]]['article']} {cls[classes[0]]['noun']}"
        elif len(distinct) == 1:
            phrase = f"{NUMBER_WORDS[len(classes)]} {cls[classes[0]]['plural']}"
        elif len(classes) == 2:
            rel = relation(boxes[0], boxes[1])
            if rel is None:
                raise ValueError("two different objects without an unambiguous relation")
            word, first, second = rel
            order = [first, second]
            a, b = cls[classes[first]], cls[classes[second]]
            phrase = f"{a['article']} {a['noun']} {word} {b['article']} {b['noun']}"
        elif len(distinct) == 2:
            pair = max(distinct, key=classes.count)
            single = min(distinct, key=classes.count)
            order = ([i for i in order if classes[i] == pair] +
                     [i for i in order if classes[i] == single])
            phrase = (f"two {cls[pair]['plural']} and "
                      f"{cls[single]['article']} {cls[single]['noun']}")
        else:
            order = left_to_right(boxes)
            if order is None:
                raise ValueError("three different objects without a clear left-to-right order")
            a, b, c = (cls[classes[i]] for i in order)
            phrase = (f"{a['article']} {a['noun']}, {b['article']} {b['noun']} and "
                      f"{c['article']} {c['noun']}")
        bg = self.colours[colour]
        caption = f"{phrase} on {bg['article']} {bg['name']} background"
        return {
            "caption": caption,
            "background": {"name": bg["name"], "rgb": rgb},
            "objects": [{"noun": cls[classes[i]]["noun"], "code_point": cls[classes[i]]["code_point"],
                         "class": classes[i], "box": boxes[i]} for i in order],
        }

    # --- pixels ----------------------------------------------------------------------------
    def _sprite(self, cls, side):
        key = (cls, side)
        sprite = self._sprites.get(key)
        if sprite is None:
            rgba = np.asarray(self.emoji[cls].resize((side, side), Image.LANCZOS), np.uint16)
            sprite = (rgba[..., :3] * rgba[..., 3:4], 255 - rgba[..., 3:4])
            self._sprites[key] = sprite
        return sprite

    def render(self, scene, out=None):
        """uint8 [size, size, 3]. Alpha compositing in integers, so every machine draws the same
        bytes."""
        if out is None:
            out = np.empty((self.size, self.size, 3), np.uint8)
        out[...] = np.asarray(scene["background"]["rgb"], np.uint8)
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            premult, inv_alpha = self._sprite(obj["class"], x1 - x0)
            region = out[y0:y1, x0:x1].astype(np.uint16)
            out[y0:y1, x0:x1] = (premult + region * inv_alpha + 127) // 255
        return out

    def batch(self, seed, start, count, split="train", out_size=None):
        """Scenes start .. start+count-1 of a stream, rendered. With out_size, each image is
        resized to out_size x out_size with Pillow's bilinear filter, exactly as the model's
        image processor (and the C engine) resize an image of this world's size."""
        side = self.size if out_size is None else int(out_size)
        images = np.empty((count, side, side, 3), np.uint8)
        scenes = []
        canvas = np.empty((self.size, self.size, 3), np.uint8)
        for k in range(count):
            scene = self.scene(seed, start + k, split)
            self.render(scene, canvas)
            if side == self.size:
                images[k] = canvas
            else:
                images[k] = np.asarray(Image.fromarray(canvas).resize((side, side), Image.BILINEAR))
            scenes.append(scene)
        return images, scenes

    # --- the language ----------------------------------------------------------------------
    def vocabulary(self):
        """Every word a caption can contain, in a fixed order (the tokenizer's input)."""
        words = ["a", "an", "two", "three", "left", "of", "above", "and", "on", "background", ","]
        words += [c["name"] for c in self.colours]
        for c in self.classes:
            words += [c["noun"], c["plural"]]
        seen, out = set(), []
        for w in words:
            if w not in seen:
                seen.add(w)
                out.append(w)
        return out


def public_record(scene):
    """A scene as scenes.jsonl stores it (no internal class indexes)."""
    return {
        "caption": scene["caption"],
        "background": scene["background"],
        "objects": [{"noun": o["noun"], "code_point": o["code_point"], "box": o["box"]}
                    for o in scene["objects"]],
    }
