"""The deterministic test images of tests/fixtures/images/ (spec §3 cases: sizes above and
below the model input, odd aspect ratios, grey, grey+alpha, RGBA, palette, palette with
transparency, 1-bit, 16-bit RGB). Each is a PNG (lossless, so decoded pixels are exact) kept
well under 20 KB.

`build_images()` returns {file name: PNG bytes}; nothing here touches the disk, so the fixture
builder can use the images before make_goldens.py writes them.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _png(image, **save_args):
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True, **save_args)
    return buf.getvalue()


def _png_rgb16(rgb16):
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), unfiltered rows."""
    h, w, _ = rgb16.shape

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def _grid(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return y, x


def _u8(a):
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def gradient(h, w):
    y, x = _grid(h, w)
    return _u8(np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1),
                         127 + 120 * np.sin((x + y) / 5.0)], axis=-1))


def checker(h, w, cell, c0=(230, 40, 40), c1=(20, 60, 200)):
    y, x = _grid(h, w)
    mask = ((y // cell + x // cell) % 2).astype(bool)
    out = np.empty((h, w, 3), np.uint8)
    out[~mask] = c0
    out[mask] = c1
    return out


def noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def circles(h, w):
    y, x = _grid(h, w)
    img = np.zeros((h, w, 3))
    img[..., 0] = 40 + 150 * (x / w)
    img[..., 1] = 200 - 120 * (y / h)
    img[..., 2] = 90
    for cy, cx, r, col in ((0.4, 0.3, 0.22, (250, 220, 30)), (0.6, 0.7, 0.3, (30, 30, 160)),
                           (0.2, 0.8, 0.12, (240, 240, 240))):
        inside = (y - cy * h) ** 2 + (x - cx * w) ** 2 < (r * min(h, w)) ** 2
        img[inside] = col
    return _u8(img)


def stripes(h, w, period, vertical=True):
    y, x = _grid(h, w)
    t = (x if vertical else y) % period < period / 2
    return _u8(np.stack([np.where(t, 250, 10), np.where(t, 120, 200), 60 + 0 * x], axis=-1))


def rings(h, w):
    y, x = _grid(h, w)
    r = np.hypot(y - h / 2, x - w / 2)
    return _u8(np.stack([128 + 127 * np.sin(r / 3), 128 + 127 * np.cos(r / 5), 255 - 2 * r], axis=-1))


def blocks(h, w, seed, cell=6):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=((h + cell - 1) // cell, (w + cell - 1) // cell, 3))
    return np.repeat(np.repeat(colours, cell, 0), cell, 1)[:h, :w].astype(np.uint8)


def diagonal(h, w):
    y, x = _grid(h, w)
    return _u8(np.stack([255 * ((x + y) % 23 < 11), 255 * (x > y), 128 + 0 * x], axis=-1))


def build_images():
    """{file name: PNG bytes}, in a fixed order."""
    images = {}

    def rgb(name, arr):
        images[name] = _png(Image.fromarray(arr, "RGB"))

    rgb("gradient_32x32.png", gradient(32, 32))            # exactly tiny's input: no resize
    rgb("gradient_48x48.png", gradient(48, 48))            # exactly wide's input
    rgb("checker_64x64.png", checker(64, 64, 8))           # 2x downscale
    rgb("noise_40x40.png", noise(40, 40, 1))
    rgb("circles_200x150.png", circles(150, 200))          # larger, landscape
    rgb("stripes_100x37.png", stripes(37, 100, 7))         # odd aspect
    rgb("tall_13x71.png", gradient(71, 13))                # narrow and tall
    rgb("tiny_5x3.png", noise(3, 5, 2))                    # strong upscale
    rgb("one_pixel_1x1.png", np.array([[[200, 100, 50]]], np.uint8))
    rgb("wide_300x20.png", stripes(20, 300, 11))           # very wide
    rgb("rings_96x96.png", rings(96, 96))
    rgb("noise_17x23.png", noise(23, 17, 3))
    rgb("blocks_31x29.png", blocks(29, 31, 4))
    rgb("diag_77x77.png", diagonal(77, 77))
    rgb("ramp_128x8.png", gradient(8, 128))
    rgb("checker_33x33.png", checker(33, 33, 3, (0, 0, 0), (255, 255, 255)))

    grey = _u8(gradient(45, 60)[..., 0] * 0.5 + gradient(45, 60)[..., 2] * 0.5)
    images["grey_60x45.png"] = _png(Image.fromarray(grey, "L"))
    images["grey_7x200.png"] = _png(Image.fromarray(_u8(rings(200, 7)[..., 1]), "L"))

    # grey + alpha: alpha is dropped, grey kept as stored (no compositing)
    la = np.stack([_u8(rings(30, 30)[..., 0]), _u8(gradient(30, 30)[..., 0])], axis=-1)
    images["grey_alpha_30x30.png"] = _png(Image.fromarray(la, "LA"))

    # RGBA with colour under fully transparent pixels: convert("RGB") must keep that colour
    rgba = np.concatenate([circles(24, 40), _u8(gradient(24, 40)[..., :1])], axis=-1)
    rgba[:, :8, 3] = 0
    images["rgba_40x24.png"] = _png(Image.fromarray(rgba, "RGBA"))
    opaque = np.concatenate([rings(32, 32), np.full((32, 32, 1), 255, np.uint8)], axis=-1)
    images["rgba_opaque_32x32.png"] = _png(Image.fromarray(opaque, "RGBA"))

    # palette images: 8-bit, with a transparent entry (ignored by convert("RGB")), 4-bit
    pal = Image.fromarray(circles(50, 50), "RGB").quantize(colors=16, method=Image.MEDIANCUT)
    images["palette_50x50.png"] = _png(pal)
    pal_t = Image.fromarray(blocks(17, 33, 5, cell=4), "RGB").quantize(colors=8, method=Image.MEDIANCUT)
    images["palette_trns_33x17.png"] = _png(pal_t, transparency=0)
    pal4 = Image.fromarray(checker(24, 24, 4), "RGB").quantize(colors=4, method=Image.MEDIANCUT)
    images["palette4_24x24.png"] = _png(pal4, bits=4)

    # 1-bit: 0 -> black, 1 -> white
    images["bilevel_64x48.png"] = _png(Image.fromarray(diagonal(48, 64)[..., 0] > 127).convert("1"))

    # 16 bits per channel: Pillow keeps the high byte of each sample
    y, x = _grid(20, 20)
    rgb16 = np.stack([x * 3300 + 17, y * 3300 + 255, (x * y * 150) % 65536], axis=-1).astype(np.uint16)
    images["rgb16_20x20.png"] = _png_rgb16(rgb16)
    return images
