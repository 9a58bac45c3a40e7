#!/usr/bin/python3
"""Goldens for xcap's image decoding and preprocessing, made with Pillow (spec §3).

Writes
  tests/fixtures/resize/   source images (.npy uint8), Pillow's resize of them for every
                           filter and many target sizes (cases.txt lists them), and
                           pixel values after rescale/normalize for a few processor configs.
  tests/fixtures/imgfmt/   one small picture saved by Pillow (or by hand, where Pillow cannot
                           write the variant) in every format xcap decodes, each with what
                           transformers' load_image() makes of it as the golden:
                           ImageOps.exif_transpose(Image.open(f)).convert("RGB"); plus bad
                           files for the error paths.

Run from the repository root:  /usr/bin/python3 weights/reference/make_resize_goldens.py
Only numpy and Pillow are used. The C code under test never produces a golden.
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, ImageOps, PngImagePlugin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESIZE_DIR = os.path.join(ROOT, "tests", "fixtures", "resize")
FMT_DIR = os.path.join(ROOT, "tests", "fixtures", "imgfmt")

FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Outputs larger than this are checked through a hash (FNV-1a 64 of the H x W x C bytes) to
# keep the fixtures small; every code path also has full-array goldens at smaller sizes.
FULL_GOLDEN_MAX_BYTES = 4000


def fnv1a64(arr):
    """FNV-1a 64 of the array bytes in C order (tests/test_preprocess.c computes the same)."""
    data = np.ascontiguousarray(arr).reshape(-1).astype(np.uint64)
    h = 0xCBF29CE484222325
    for b in data.tolist():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def generated_image(w, h, c):
    """A pattern that tests/test_preprocess.c builds with the same integer formula."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    planes = []
    for ch in range(c):
        v = (x * 3 + y * 2 + ch * 70 + ((x // 7 + y // 5) % 2) * 60 + (x * x + y * 13 * ch) % 23) % 256
        planes.append(v)
    return np.stack(planes, axis=-1).astype(np.uint8)


def photo_like(w, h, seed):
    """Smooth gradients, hard edges, a thin diagonal and a noisy patch: every kind of content
    a resize filter treats differently."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 4.0)
    img = np.stack([r, g, b], axis=-1)
    img[h // 4 : h // 2, w // 5 : w // 2] = [250, 20, 30]  # red block, hard edges
    diag = np.abs(x - y * w / h) < 1.0
    img[diag] = [0, 0, 0]
    patch = (slice(h // 2, h - 2), slice(w // 2, w - 3))
    img[patch] = rng.integers(0, 256, size=img[patch].shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def to_pil(arr):
    c = arr.shape[2]
    h, w = arr.shape[:2]
    mode = {1: "L", 2: "La", 3: "RGB", 4: "CMYK"}[c]
    return Image.frombytes(mode, (w, h), np.ascontiguousarray(arr).tobytes())


def from_pil(im, c):
    w, h = im.size
    return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(h, w, c)


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


# ---------------------------------------------------------------------------------------------
# Resize goldens


def make_resize():
    os.makedirs(RESIZE_DIR, exist_ok=True)
    rng = np.random.default_rng(20240611)
    sources = {
        "photo": photo_like(64, 48, 1),
        "noise": rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8),
        "tall": rng.integers(0, 256, size=(300, 7, 3), dtype=np.uint8),
        "gray": photo_like(29, 31, 2)[..., 1:2],
        "cmyk": rng.integers(0, 256, size=(17, 23, 4), dtype=np.uint8),
        "la": rng.integers(0, 256, size=(13, 19, 2), dtype=np.uint8),
        "line": rng.integers(0, 256, size=(1, 40, 3), dtype=np.uint8),
    }
    # (width, height) targets per source: down, up, mixed, one axis unchanged, 1-pixel sides,
    # the identity, odd ratios, and the 224 x 224 of ViT checkpoints.
    targets = {
        "photo": [(32, 32), (45, 31), (64, 48), (64, 20), (20, 48), (1, 1), (100, 75),
                  (128, 96), (224, 224), (13, 47)],
        "noise": [(32, 32), (16, 9), (64, 50), (37, 40), (20, 23), (1, 23), (37, 1), (5, 3),
                  (74, 46), (224, 224)],
        "tall": [(224, 224), (24, 24), (7, 50), (3, 300), (14, 11)],
        "gray": [(16, 16), (40, 33), (29, 10), (3, 62)],
        "cmyk": [(10, 10), (30, 25), (23, 5)],
        "la": [(8, 8), (25, 20), (19, 2)],
        "line": [(224, 224), (17, 1), (40, 3)],
    }
    generated = {"gen640x480x3": (640, 480, 3), "gen300x200x1": (300, 200, 1),
                 "gen100x80x3": (100, 80, 3)}
    gen_targets = {"gen640x480x3": [(224, 224), (384, 384), (639, 479)],
                   "gen300x200x1": [(224, 224)], "gen100x80x3": [(384, 384), (224, 224)]}

    lines = ["# source filter out_width out_height golden",
             "# golden: a .npy file (uint8, H x W x C) or fnv1a64:<hex> of the H x W x C bytes",
             "# source: a .npy file here, or gen:W:H:C (tests/test_preprocess.c builds it)"]
    for name, arr in sources.items():
        save_npy(os.path.join(RESIZE_DIR, f"src_{name}.npy"), arr)
    all_sources = [(f"src_{n}.npy", a, targets[n]) for n, a in sources.items()]
    all_sources += [("gen:%d:%d:%d" % generated[n], generated_image(*generated[n]), gen_targets[n])
                    for n in generated]
    n_full = n_hash = 0
    for src_name, arr, tlist in all_sources:
        c = arr.shape[2]
        im = to_pil(arr)
        for (w, h) in tlist:
            for f, fname in FILTERS.items():
                out = from_pil(im.resize((w, h), resample=f), c)
                assert out.shape == (h, w, c)
                if out.nbytes <= FULL_GOLDEN_MAX_BYTES:
                    base = src_name.replace("src_", "").replace(".npy", "").replace(":", "_")
                    gname = f"out_{base}_{w}x{h}_{fname}.npy"
                    save_npy(os.path.join(RESIZE_DIR, gname), out)
                    n_full += 1
                else:
                    gname = "fnv1a64:%016x" % fnv1a64(out)
                    n_hash += 1
                lines.append(f"{src_name} {f} {w} {h} {gname}")
    with open(os.path.join(RESIZE_DIR, "cases.txt"), "w") as fp:
        fp.write("\n".join(lines) + "\n")
    print(f"resize: {n_full} full goldens, {n_hash} hashed")

    # Rescale + normalize, computed the way transformers' ViTImageProcessor does it:
    # resize with Pillow, rescale = float64 multiply then float32, normalize in float32.
    configs = {
        "vit": ("photo", {"do_normalize": True, "do_resize": True,
                          "feature_extractor_type": "ViTFeatureExtractor",
                          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                          "resample": 2, "size": {"height": 24, "width": 32}}),
        "imagenet": ("noise", {"image_processor_type": "ViTImageProcessor", "size": 20,
                               "resample": 3, "do_rescale": True,
                               "rescale_factor": 0.00392156862745098,
                               "image_mean": [0.485, 0.456, 0.406],
                               "image_std": [0.229, 0.224, 0.225]}),
        "norescale": ("photo", {"size": [12, 18], "resample": 0, "do_rescale": False,
                                "do_normalize": True, "image_mean": [127.5, 120.0, 100.25],
                                "image_std": [127.5, 60.0, 33.3]}),
        "plain": ("noise", {"size": {"height": 23, "width": 37}, "do_resize": False,
                            "do_normalize": False, "rescale_factor": 0.5}),
    }
    with open(os.path.join(RESIZE_DIR, "configs.txt"), "w") as fp:
        fp.write("# config directory, source image it preprocesses (golden: pixel_values.npy "
                 "inside, float32 [3, H, W])\n")
        for cname, (src, _) in configs.items():
            fp.write(f"config_{cname} src_{src}.npy\n")
    for cname, (src, cfg) in configs.items():
        d = os.path.join(RESIZE_DIR, f"config_{cname}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "preprocessor_config.json"), "w") as fp:
            json.dump(cfg, fp, indent=2)
        save_npy(os.path.join(d, "pixel_values.npy"), hf_vit_pixels(sources[src], cfg))


def hf_vit_pixels(rgb, cfg):
    size = cfg.get("size", {"height": 224, "width": 224})
    if isinstance(size, int):
        size = {"height": size, "width": size}
    elif isinstance(size, list):
        size = {"height": size[0], "width": size[1]}
    x = rgb
    if cfg.get("do_resize", True):
        x = np.asarray(Image.fromarray(x).resize((size["width"], size["height"]),
                                                 resample=cfg.get("resample", 2)))
    if cfg.get("do_rescale", True):
        x = (x.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    if cfg.get("do_normalize", True):
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        mean = np.array(cfg.get("image_mean", [0.5] * 3), dtype=x.dtype)
        std = np.array(cfg.get("image_std", [0.5] * 3), dtype=x.dtype)
        x = (x - mean) / std
    return x.astype(np.float32).transpose(2, 0, 1)


# ---------------------------------------------------------------------------------------------
# Image format fixtures


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(samples, bit_depth, color_type, interlace=False):
    """A PNG written by hand (for variants Pillow cannot save: 16-bit colour, Adam7).
    samples: H x W x C integers."""
    h, w = samples.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"

    def pack(line):  # one row of samples -> bytes, sub-byte depths packed high bits first
        if bit_depth >= 8:
            return line.astype(dtype).tobytes()
        per_byte = 8 // bit_depth
        flat = list(line.reshape(-1)) + [0] * (-line.size % per_byte)
        return bytes(sum(int(v) << (8 - bit_depth * (k + 1)) for k, v in
                         enumerate(flat[i:i + per_byte])) for i in range(0, len(flat), per_byte))

    def rows(img):
        return b"".join(b"\x00" + pack(img[y]) for y in range(img.shape[0]))

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += rows(sub)
    else:
        raw = rows(samples)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def packbits(row):
    out, i, n = bytearray(), 0, len(row)
    while i < n:
        run = 1
        while i + run < n and run < 128 and row[i + run] == row[i]:
            run += 1
        if run >= 3:
            out += bytes([257 - run, row[i]])
            i += run
            continue
        j = i
        while j < n and j - i < 128 and not (j + 2 < n and row[j] == row[j + 1] == row[j + 2]):
            j += 1
        out += bytes([j - i - 1]) + bytes(row[i:j])
        i = j
    return bytes(out)


def psd_bytes(rgb, rle):
    """A flattened RGB Photoshop file (Pillow reads PSD but cannot write it)."""
    h, w, c = rgb.shape
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, c, h, w, 8, 3)
    head += struct.pack(">III", 0, 0, 0)  # colour mode data, resources, layers: empty
    planes = [rgb[..., ch] for ch in range(c)]
    if not rle:
        return head + struct.pack(">H", 0) + b"".join(p.tobytes() for p in planes)
    packed = [packbits(p[y].tobytes()) for p in planes for y in range(h)]
    counts = b"".join(struct.pack(">H", len(r)) for r in packed)
    return head + struct.pack(">H", 1) + counts + b"".join(packed)


def bmp16_bytes(rgb, fmt565):
    """A 16-bit BMP (Pillow cannot write one): 5-6-5 with BI_BITFIELDS or 5-5-5 plain."""
    h, w = rgb.shape[:2]
    r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
    if fmt565:
        px = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
    else:
        px = ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3)
    stride = (w * 2 + 3) & ~3
    rows = b""
    for y in range(h - 1, -1, -1):
        line = px[y].astype("<u2").tobytes()
        rows += line + b"\0" * (stride - len(line))
    masks = struct.pack("<III", 0xF800, 0x07E0, 0x001F) if fmt565 else b""
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 3 if fmt565 else 0, len(rows), 2835,
                       2835, 0, 0)
    off = 14 + len(info) + len(masks)
    return b"BM" + struct.pack("<IHHI", off + len(rows), 0, 0, off) + info + masks + rows


def pnm_bytes(samples, maxval, magic):
    h, w = samples.shape[:2]
    dtype = ">u2" if maxval > 255 else "u1"
    return b"%s\n# made by make_resize_goldens.py\n%d %d\n%d\n" % (magic, w, h, maxval) + \
        samples.astype(dtype).tobytes()


def pipeline_rgb(data):
    """What transformers' load_image() gives the processor: EXIF orientation applied, then
    convert("RGB")."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def exif_orientation_bytes(orientation, big_endian=False):
    """A minimal EXIF block (TIFF header, IFD0 with ImageWidth then Orientation)."""
    e = ">" if big_endian else "<"
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8)
    ifd = struct.pack(e + "H", 2)
    ifd += struct.pack(e + "HHII", 0x0100, 4, 1, 40)  # ImageWidth, LONG
    ifd += struct.pack(e + "HHIH", 0x0112, 3, 1, orientation) + b"\0\0"  # Orientation, SHORT
    ifd += struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + head + ifd


def make_imgfmt():
    os.makedirs(FMT_DIR, exist_ok=True)
    bad_dir = os.path.join(FMT_DIR, "bad")
    os.makedirs(bad_dir, exist_ok=True)
    rng = np.random.default_rng(7)
    pic = photo_like(40, 32, 3)
    alpha = ((np.arange(40)[None, :] * 7 + np.arange(32)[:, None] * 3) % 256).astype(np.uint8)
    alpha[:4, :4] = 0  # fully transparent corner: colour must survive (no compositing)
    rgba = np.dstack([pic, alpha])
    rgb_im = Image.fromarray(pic)
    rgba_im = Image.fromarray(rgba, "RGBA")
    l_im = rgb_im.convert("L")
    la_im = Image.merge("LA", (l_im, Image.fromarray(alpha)))
    p_im = rgb_im.quantize(64)
    p16_im = rgb_im.quantize(16)

    files = {}  # name -> bytes

    def pil_save(name, im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        files[name] = b.getvalue()

    pil_save("png_rgb.png", rgb_im, "PNG")
    pil_save("png_rgba.png", rgba_im, "PNG")
    pil_save("png_l.png", l_im, "PNG")
    pil_save("png_la.png", la_im, "PNG")
    pil_save("png_p.png", p_im, "PNG")
    pil_save("png_p4bit.png", p16_im, "PNG", bits=4)
    pil_save("png_p_trns.png", p_im, "PNG", transparency=5)
    pil_save("png_1bit.png", l_im.convert("1"), "PNG")
    pil_save("png_l16.png", Image.fromarray((np.asarray(l_im).astype(np.uint16) * 3 + 1)), "PNG")
    pil_save("png_l_trns.png", l_im, "PNG", transparency=77)
    pic16 = pic.astype(np.uint16) * 257 + rng.integers(0, 257, size=pic.shape)
    files["png_rgb16.png"] = png_bytes(pic16, 16, 2)
    files["png_rgba16.png"] = png_bytes(np.dstack([pic16, alpha.astype(np.uint16) * 257]), 16, 6)
    files["png_la16.png"] = png_bytes(np.dstack([np.asarray(l_im).astype(np.uint16) * 250,
                                                 alpha.astype(np.uint16) * 257]), 16, 4)
    files["png_rgb_adam7.png"] = png_bytes(pic, 8, 2, interlace=True)
    files["png_gray2bit.png"] = png_bytes(np.asarray(l_im)[..., None] >> 6, 2, 0)
    files["png_gray4bit.png"] = png_bytes(np.asarray(l_im)[..., None] >> 4, 4, 0)

    pil_save("bmp_rgb.bmp", rgb_im, "BMP")
    pil_save("bmp_rgba.bmp", rgba_im, "BMP")
    pil_save("bmp_l.bmp", l_im, "BMP")
    pil_save("bmp_p.bmp", p_im, "BMP")
    pil_save("bmp_1bit.bmp", l_im.convert("1"), "BMP")
    files["bmp_565.bmp"] = bmp16_bytes(pic, True)
    files["bmp_555.bmp"] = bmp16_bytes(pic, False)

    pil_save("gif.gif", p_im, "GIF")  # interlaced: Pillow interlaces when height >= 16
    pil_save("gif_trns.gif", p_im, "GIF", transparency=5)
    pil_save("gif_noninterlaced.gif", p16_im, "GIF", interlace=False)
    # First frame smaller than the logical screen: widen the screen in the header, so
    # pixels outside the frame take the fill colour Pillow gives them.
    g = bytearray(files["gif_trns.gif"])
    struct.pack_into("<HH", g, 6, 46, 35)
    files["gif_small_frame.gif"] = bytes(g)

    pil_save("tga_rgb.tga", rgb_im, "TGA")
    pil_save("tga_rgba.tga", rgba_im, "TGA")
    pil_save("tga_l.tga", l_im, "TGA")
    pil_save("tga_p.tga", p_im, "TGA")
    pil_save("tga_rle.tga", rgb_im, "TGA", compression="tga_rle")

    pil_save("pnm_rgb.ppm", rgb_im, "PPM")
    pil_save("pnm_l.pgm", l_im, "PPM")
    pil_save("pnm_l16.pgm", Image.fromarray(np.asarray(l_im).astype(np.int32) * 200 + 3, "I"),
             "PPM")
    files["pnm_rgb_max100.ppm"] = pnm_bytes((pic.astype(np.int64) * 100) // 255, 100, b"P6")
    files["pnm_l_max1000.pgm"] = pnm_bytes((np.asarray(l_im).astype(np.int64) * 1000) // 255,
                                           1000, b"P5")
    files["pnm_rgb_max65535.ppm"] = pnm_bytes(pic16, 65535, b"P6")
    files["pnm_rgb_max300.ppm"] = pnm_bytes((pic.astype(np.int64) * 300) // 255, 300, b"P6")

    files["psd_rgb.psd"] = psd_bytes(pic, rle=False)
    files["psd_rgb_rle.psd"] = psd_bytes(pic, rle=True)
    files["psd_rgba.psd"] = psd_bytes(rgba, rle=False)
    files["psd_rgba_rle.psd"] = psd_bytes(rgba, rle=True)

    # EXIF orientation, applied by transformers' load_image (ImageOps.exif_transpose).
    for o in range(1, 9):
        pil_save(f"png_orient{o}.png", rgb_im, "PNG", exif=exif_orientation_bytes(o, o % 2 == 0))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:'
                  'Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    pil_save("png_orient_xmp.png", rgb_im, "PNG", pnginfo=info)
    pil_save("jpg_orient6.jpg", rgb_im, "JPEG", quality=90, exif=exif_orientation_bytes(6))
    pil_save("jpg_orient8_mm.jpg", rgb_im, "JPEG", quality=90,
             exif=exif_orientation_bytes(8, big_endian=True))

    # JPEG: lossy, so only the largest difference from Pillow's decode is measured.
    pil_save("jpg_baseline.jpg", rgb_im, "JPEG", quality=90)
    pil_save("jpg_progressive.jpg", rgb_im, "JPEG", quality=90, progressive=True)
    pil_save("jpg_444.jpg", rgb_im, "JPEG", quality=95, subsampling=0)
    pil_save("jpg_gray.jpg", l_im, "JPEG", quality=90)
    pil_save("jpg_cmyk.jpg", rgb_im.convert("CMYK"), "JPEG", quality=95)  # Adobe, inverted
    odd = Image.fromarray(photo_like(37, 23, 4))  # sizes that are not multiples of the MCU
    pil_save("jpg_odd_size.jpg", odd, "JPEG", quality=85)

    manifest = ["# file golden  (golden = Pillow's exif_transpose(Image.open(file)).convert('RGB'), uint8 "
                "H x W x 3)"]
    golden_names = {}
    for name, data in sorted(files.items()):
        with open(os.path.join(FMT_DIR, name), "wb") as fp:
            fp.write(data)
        try:
            golden = pipeline_rgb(data)
        except Exception as e:
            raise SystemExit(f"Pillow cannot read {name}: {e}")
        # Files that decode to the same pixels share one golden (most lossless RGB ones).
        key = golden.tobytes()
        if key not in golden_names:
            golden_names[key] = os.path.splitext(name)[0] + ".rgb.npy"
            save_npy(os.path.join(FMT_DIR, golden_names[key]), golden)
        manifest.append(f"{name} {golden_names[key]}")
    with open(os.path.join(FMT_DIR, "files.txt"), "w") as fp:
        fp.write("\n".join(manifest) + "\n")

    make_bad_files(bad_dir, files)
    make_truncation_masks(files)
    print(f"imgfmt: {len(files)} files")


def make_bad_files(bad_dir, files):
    bad = {
        "empty.png": b"",
        "truncated.png": files["png_rgb.png"][: len(files["png_rgb.png"]) // 2],
        "truncated.jpg": files["jpg_baseline.jpg"][: len(files["jpg_baseline.jpg"]) // 2],
        "truncated_progressive.jpg":
            files["jpg_progressive.jpg"][: len(files["jpg_progressive.jpg"]) * 2 // 3],
        "text.png": b"This is not an image, only some text with a .png name.\n" * 3,
        "huge.png": png_huge_header(100000, 100000),
        "huge_width.png": png_huge_header(20000, 10),
        "huge_area.bmp": bmp_huge_header(16384, 16385),
        "huge.gif": b"GIF89a" + struct.pack("<HHBBB", 30000, 30000, 0, 0, 0) + b"\x3b",
        "header_only.jpg": files["jpg_baseline.jpg"][:200],
        "garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "webp.webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 24,
        "tiff.tif": b"II*\x00\x08\x00\x00\x00" + b"\x00" * 16,
    }
    for name, data in bad.items():
        with open(os.path.join(bad_dir, name), "wb") as fp:
            fp.write(data)
        try:
            pipeline_rgb(data)
            pillow = "decodes"
        except Exception as e:  # noqa: BLE001 - recording Pillow's verdict only
            pillow = type(e).__name__
        print(f"  bad/{name}: Pillow {pillow}")


def png_huge_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def bmp_huge_header(w, h):
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\0" * 16


def pillow_prefix_ranges(data):
    """The prefix lengths n for which Pillow decodes data[:n], as "a-b,c-d" ranges."""
    ok = []
    for n in range(1, len(data) + 1):
        try:
            pipeline_rgb(data[:n])
            ok.append(n)
        except Exception:  # noqa: BLE001 - any failure counts as "does not decode"
            pass
    ranges, start = [], None
    for i, n in enumerate(ok):
        if start is None:
            start = n
        if i + 1 == len(ok) or ok[i + 1] != n + 1:
            ranges.append(f"{start}-{n}")
            start = None
    return ",".join(ranges) or "none"


def make_truncation_masks(files):
    """For some files, which prefixes Pillow decodes. xcap must fail exactly where Pillow
    fails (no silent partial images) and succeed where Pillow succeeds."""
    small = Image.fromarray(photo_like(16, 12, 5))
    extra = {}
    for name, fmt, kw in (("trunc_png.png", "PNG", {}), ("trunc_jpg.jpg", "JPEG", {}),
                          ("trunc_jpg_progressive.jpg", "JPEG", {"progressive": True})):
        b = io.BytesIO()
        small.save(b, fmt, **kw)
        extra[name] = b.getvalue()
        with open(os.path.join(FMT_DIR, name), "wb") as fp:
            fp.write(extra[name])
    swept = ["png_p.png", "png_rgb16.png", "png_l16.png", "bmp_rgb.bmp", "bmp_p.bmp",
             "tga_rgb.tga", "tga_rle.tga", "psd_rgb.psd", "psd_rgb_rle.psd", "psd_rgba_rle.psd",
             "gif.gif",
             "gif_noninterlaced.gif", "pnm_rgb.ppm", "pnm_l_max1000.pgm"]
    lines = ["# file size prefix-lengths-that-Pillow-decodes"]
    for name in list(extra) + swept:
        data = extra.get(name) or files[name]
        ranges = pillow_prefix_ranges(data)
        lines.append(f"{name} {len(data)} {ranges}")
        print(f"  {name}: {len(data)} bytes, Pillow decodes prefixes {ranges}")
    with open(os.path.join(FMT_DIR, "truncation.txt"), "w") as fp:
        fp.write("\n".join(lines) + "\n")


def main():
    print(f"Pillow {PIL.__version__}, numpy {np.__version__}")
    make_resize()
    make_imgfmt()


if __name__ == "__main__":
    sys.exit(main())
