#!/usr/bin/python3
"""Writes the hostile image corpus of tests/test_hostile.sh into this folder, with Pillow
(Debian's python3-pil, 9.4) and the standard library:

    /usr/bin/python3 tests/data/bad/make_bad.py

Each file is something a crawler can find: truncated PNG/JPEG/GIF at several lengths, empty
files, bad PNG CRCs, wrong extensions, extreme sizes, 16-bit PNG, CMYK and progressive JPEG,
an animated GIF, HTML named .jpg, headers claiming huge sizes, and compressed data built to
make a decoder work or allocate far beyond the image (zlib bomb, thousands of JPEG scans,
an overflowing Huffman table).

Beside them:
- ref/NAME.png for every file Pillow decodes: what the model's processor sees, i.e.
  ImageOps.exif_transpose(Image.open(f)).convert("RGB") resized to the tiny test model's
  32 x 32 with bilinear filtering, as an 8-bit RGB PNG. The test requires xcap's caption of
  NAME to equal its caption of ref/NAME.png, which checks the decoding against Pillow.
- pillow.tsv: Pillow's verdict on every file (ok W H, or refused and why). The test requires
  xcap to refuse exactly the files Pillow refuses, apart from the ones expected.tsv marks as
  refused on purpose.
The test itself needs neither Python nor Pillow."""
import io
import os
import struct
import zlib

from PIL import Image, ImageDraw, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "ref")
MODEL_SIZE = (32, 32)  # tests/fixtures/models/tiny/preprocessor_config.json


def picture(w=64, h=48):
    """A smooth picture with a few shapes (compresses well, captions deterministically)."""
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = (x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 128)
    d = ImageDraw.Draw(im)
    d.ellipse((w // 4, h // 4, w // 2, h // 2 + h // 4), fill=(220, 30, 40))
    d.rectangle((w // 2 + 4, 4, w - 6, h // 3), fill=(20, 40, 200))
    return im


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file(w, h, depth, colour, rows, compress_level=9):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, compress_level)) \
        + chunk(b"IEND", b"")


def png_chunks(data):
    pos, out = 8, []
    while pos + 8 <= len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        out.append((data[pos + 4:pos + 8], pos, n))
        pos += 12 + n
    return out


def jpeg_segments(data):
    """(marker, start, end) of each marker segment up to the first SOS, and the SOS itself."""
    pos, out = 2, []
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        out.append((marker, pos, pos + 2 + length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def many_scans(progressive, copies):
    """A progressive JPEG whose last scan (an AC refinement) is repeated `copies` times."""
    last_sos = progressive.rfind(b"\xff\xda")
    eoi = progressive.rfind(b"\xff\xd9")
    return progressive[:eoi] + progressive[last_sos:eoi] * copies + progressive[eoi:]


def build():
    files = {}
    pic = picture()
    png = encode(pic, "PNG")
    jpeg = encode(pic, "JPEG", quality=90)
    gif = encode(pic.convert("P", palette=Image.ADAPTIVE, colors=64), "GIF")

    for n in (8, 30, 60, len(png) // 2):
        files[f"png_cut_at_{n}.png"] = png[:n]
    files["png_no_iend.png"] = png[:-12]
    for n in (2, 100, len(jpeg) // 2):
        files[f"jpeg_cut_at_{n}.jpg"] = jpeg[:n]
    files["jpeg_no_eoi.jpg"] = jpeg[:-2]
    for n in (6, 13, 40, len(gif) // 2):
        files[f"gif_cut_at_{n}.gif"] = gif[:n]
    files["gif_no_trailer.gif"] = gif[:-1]

    files["empty.png"] = b""
    files["empty.jpg"] = b""

    for kind, _, n in png_chunks(png):
        if kind in (b"IHDR", b"IDAT"):
            bad = bytearray(png)
            start = [p for k, p, _ in png_chunks(png) if k == kind][0]
            bad[start + 8 + n] ^= 0xFF
            files[f"png_bad_crc_{kind.decode().lower()}.png"] = bytes(bad)

    files["png_named.jpg"] = png
    files["jpeg_named.png"] = jpeg
    files["html_named.jpg"] = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n" \
        b"<body><h1>Not Found</h1></body></html>\n"
    files["text_named.png"] = b"hello, world\n"
    files["jpeg_leading_fill_bytes.jpg"] = b"\xff\xff" + jpeg  # stb skips them, Pillow does not

    files["one_pixel_1x1.png"] = encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    files["line_1x10000.png"] = encode(picture(1, 10000), "PNG")
    files["line_10000x1.png"] = encode(picture(10000, 1), "PNG")

    files["png16_rgb.png"] = png16_rgb(pic)
    files["png16_grey.png"] = encode(grey16(pic), "PNG")
    files["jpeg_cmyk.jpg"] = encode(pic.convert("CMYK"), "JPEG", quality=90)
    progressive = encode(pic, "JPEG", quality=90, progressive=True)
    files["jpeg_progressive.jpg"] = progressive
    frames = [pic, ImageOps.invert(pic), pic.transpose(Image.FLIP_LEFT_RIGHT)]
    files["gif_animated.gif"] = encode(frames[0].convert("P", palette=Image.ADAPTIVE), "GIF", save_all=True,
                                       append_images=[f.convert("P", palette=Image.ADAPTIVE) for f in frames[1:]],
                                       duration=100, loop=0)

    # headers claiming huge sizes, with valid CRCs and a little data
    files["png_65535x65535.png"] = png_file(65535, 65535, 8, 2, b"\0" * 64)
    files["png_16384x16384.png"] = png_file(16384, 16384, 8, 0, b"\0" * 64)  # within sides, over 100 MP
    files["gif_65535x65535.gif"] = b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" \
        + b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00\x3b"
    bmp_header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 100000, 100000,
                                                                             1, 24, 0, 0, 2835, 2835, 0, 0)
    files["bmp_100000x100000.bmp"] = bmp_header

    # compressed data that outgrows the image
    files["png_zlib_bomb.png"] = png_file(100, 100, 8, 0, b"\0" * (24 << 20))
    files["jpeg_600_scans.jpg"] = many_scans(encode(picture(16, 16), "JPEG", quality=90, progressive=True), 600)
    overflow = bytearray(jpeg)
    for marker, start, _ in jpeg_segments(jpeg):
        if marker == 0xC4:  # first Huffman table: its 16 code counts now add up to 16 * 255
            overflow[start + 5:start + 21] = b"\xff" * 16
            break
    files["jpeg_huffman_overflow.jpg"] = bytes(overflow)
    # tables left out: Huffman (as motion-JPEG frames do; libjpeg-turbo then uses the standard
    # ones, which Pillow's encoder also used here) and quantization (nothing to fall back on)
    for marker, what in ((0xC4, "huffman"), (0xDB, "quantization")):
        kept = jpeg[:2] + b"".join(jpeg[s:e] for m, s, e in jpeg_segments(jpeg) if m != marker) \
            + jpeg[jpeg_segments(jpeg)[-1][2]:]
        files[f"jpeg_no_{what}_tables.jpg"] = kept
    return files


def png16_rgb(pic):
    """16-bit RGB PNG written by hand (Pillow saves RGB as 8-bit), each sample v * 257 + x."""
    w, h = pic.size
    px = pic.load()
    rows = b"".join(b"\0" + b"".join(struct.pack(">HHH", *(c * 257 - (x % 2) * (c > 0) for c in px[x, y]))
                                     for x in range(w)) for y in range(h))
    return png_file(w, h, 16, 2, rows)


def grey16(pic):
    """Mode I;16 (16-bit grey): values above 255 (Pillow's I -> RGB conversion clips them)."""
    grey = pic.convert("L")
    im = Image.new("I;16", pic.size)
    im.putdata([v * 2 for v in grey.getdata()])
    return im


def pillow_verdict(data):
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        return rgb, f"ok\t{rgb.size[0]}\t{rgb.size[1]}"
    except Exception as e:  # what Pillow says, for the record
        why = str(e).split(" <_io.BytesIO")[0]  # no object address: the file must not change between runs
        return None, "refused\t" + f"{type(e).__name__}: {why}".replace("\t", " ").replace("\n", " ")[:120]


def main():
    os.makedirs(REF, exist_ok=True)
    for old in os.listdir(REF):
        os.remove(os.path.join(REF, old))
    lines = []
    for name, data in sorted(build().items()):
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        if name.startswith(("png_65535", "png_16384", "gif_65535", "bmp_100000")):
            verdict = "refused\tnot decoded (Pillow would allocate the whole image)"
            rgb = None
        else:
            rgb, verdict = pillow_verdict(data)
        if rgb is not None:
            rgb.resize(MODEL_SIZE, Image.BILINEAR).save(os.path.join(REF, os.path.splitext(name)[0] + ".png"))
        lines.append(f"{name}\t{verdict}")
    with open(os.path.join(HERE, "pillow.tsv"), "w") as f:
        f.write("# file\tPillow 9.4 verdict (written by make_bad.py)\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
