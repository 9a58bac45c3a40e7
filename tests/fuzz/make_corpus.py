#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from the repository's
fixtures and a few hand-made files. Standard library only; run from anywhere:
    python3 tests/fuzz/make_corpus.py
The seeds are committed; the fuzzers add what they find in a separate working corpus."""
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
TINY = os.path.join(ROOT, "tests", "fixtures", "models", "tiny")
IMGFMT = os.path.join(ROOT, "tests", "fixtures", "imgfmt")


def target_dir(name):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def image_seeds():
    d = target_dir("fuzz_image")
    # one file per decoder path: PNG bit depths, palette, Adam7, EXIF/XMP orientation; JPEG
    # baseline, progressive, grey, CMYK, EXIF; GIF; BMP variants; TGA raw/RLE; PSD raw/RLE; PNM.
    for name in ["png_1bit.png", "png_gray2bit.png", "png_p4bit.png", "png_p_trns.png", "png_l16.png",
                 "png_la.png", "png_rgb_adam7.png", "png_orient6.png", "png_orient_xmp.png",
                 "png_rgba.png", "trunc_png.png", "jpg_gray.jpg", "jpg_progressive.jpg",
                 "jpg_baseline.jpg", "jpg_orient8_mm.jpg", "jpg_cmyk.jpg", "jpg_odd_size.jpg",
                 "gif_small_frame.gif", "gif_trns.gif", "gif_noninterlaced.gif", "bmp_1bit.bmp",
                 "bmp_555.bmp", "bmp_565.bmp", "bmp_p.bmp", "tga_l.tga", "tga_p.tga", "tga_rle.tga",
                 "psd_rgb_rle.psd", "psd_rgba_rle.psd", "pnm_l.pgm", "pnm_l_max1000.pgm",
                 "pnm_rgb_max300.ppm"]:
        shutil.copy(os.path.join(IMGFMT, name), os.path.join(d, name))


def safetensors_file(tensors, data, metadata=None, pad=True):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(tensors)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    d = target_dir("fuzz_safetensors")
    f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, -7)
    write(d, "f32_2x3", safetensors_file(
        {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, f32, {"format": "pt"}))
    write(d, "three_dtypes", safetensors_file({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F16", "shape": [2, 1], "data_offsets": [8, 12]},
        "c": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]}},
        struct.pack("<2f", 1, 2) + struct.pack("<4H", 0x3c00, 0x7c00, 0x3fc0, 0xbe80)))
    write(d, "int8_with_scale", safetensors_file({
        "w": {"dtype": "I8", "shape": [2, 2], "data_offsets": [0, 4]},
        "w_scale": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        bytes([1, 255, 127, 128]) + struct.pack("<2f", 0.5, 0.25)))
    write(d, "zero_size", safetensors_file({
        "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
        "scalar": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, struct.pack("<f", 5)))
    write(d, "empty_header", safetensors_file({}, b"", {}))
    write(d, "overlap", safetensors_file({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
    write(d, "huge_offset", safetensors_file(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551616]}}, bytes(4)))


def config_seeds():
    d = target_dir("fuzz_config")
    for name in ["config.json", "generation_config.json", "preprocessor_config.json"]:
        shutil.copy(os.path.join(TINY, name), os.path.join(d, name))
    write(d, "gen_beams.json", json.dumps({"num_beams": 4, "early_stopping": "never", "eos_token_id": [1, 2],
                                           "length_penalty": 0.5, "no_repeat_ngram_size": 3, "max_length": 16,
                                           "do_sample": False, "top_k": 5, "top_p": 0.9, "temperature": 0.7}))
    write(d, "pre_int_size.json", json.dumps({"size": 224, "resample": 3, "image_mean": 0.5, "do_resize": 1,
                                              "image_processor_type": "ViTImageProcessor"}))
    write(d, "pre_list_size.json", json.dumps({"size": [32, 48], "image_std": [0.2, 0.3, 0.4],
                                               "rescale_factor": 0.5, "do_normalize": False}))
    write(d, "pre_shortest.json", json.dumps({"size": {"shortest_edge": 64}, "do_convert_rgb": None}))


def tokenizer_seeds():
    d = target_dir("fuzz_tokenizer_load")
    vocab = read(os.path.join(TINY, "vocab.json"))
    merges = read(os.path.join(TINY, "merges.txt"))
    tok_config = read(os.path.join(TINY, "tokenizer_config.json"))
    special = read(os.path.join(TINY, "special_tokens_map.json"))
    text = b" a photo of the cat, \xe0\xa4\xa8\xe0\xa4\xae\xf0\x9f\x98\x80 <|endoftext|>"
    nul = b"\0"
    write(d, "tiny_files", b"\0" + vocab + nul + merges + nul + tok_config + nul + special + nul + b"{}" + nul + text)
    write(d, "tiny_vocab_merges_only", b"\0" + vocab + nul + merges)
    merge_list = [line for line in merges.decode().splitlines() if line and not line.startswith("#version")]
    tokenizer_json = {
        "model": {"type": "BPE", "vocab": json.loads(vocab), "merges": [m.split(" ") for m in merge_list[:20]]
                  + merge_list[20:]},
        "added_tokens": [{"id": 299, "content": "<|endoftext|>", "special": True}],
    }
    write(d, "tiny_tokenizer_json", b"\1" + json.dumps(tokenizer_json).encode() + nul + nul
          + json.dumps({"add_prefix_space": True, "extra_special_tokens": {"x": "<x>"}}).encode() + nul + nul
          + b'{"<new>": 300}' + nul + b" hello world")
    write(d, "small_hand_made", b"\0" + json.dumps({"a": 0, "b": 1, "ab": 2, "\u0120": 3}).encode() + nul
          + b"#version: 0.2\na b\n" + nul + json.dumps({"added_tokens_decoder": {
              "4": {"content": "<pad>", "special": True}}, "clean_up_tokenization_spaces": True,
              "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output": True}).encode())


def bpe_seeds():
    d = target_dir("fuzz_bpe")
    texts = {
        "ascii": b"A photo of a cat sitting on a red couch.",
        "contractions": b"it's they're we've I'm you'll he'd don't 'S 'T",
        "spaces": b"  two  spaces\t\ttabs\n\nnewlines   \r\n end   ",
        "digits": b"route 66, 3.14159 and 1,000,000",
        "devanagari": "नमस्ते दुनिया".encode(),
        "emoji": "a 😀 b 👍🏽 c 🇫🇷".encode(),
        "invalid_utf8": b"ok \xff\xfe \xc3\x28 \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 end",
        "special": b"<|endoftext|>before<|endoftext|><|endoftext|> after<|endo",
        "punctuation": b"!!! ??? ... --- ''' \"\"\" ,,, ;;; ::: (([[{{",
        "ids": struct.pack("<8i", 0, 1, 299, 298, 300, -1, 150, 2 ** 31 - 1),
    }
    for name, data in texts.items():
        write(d, name, data)


if __name__ == "__main__":
    image_seeds()
    safetensors_seeds()
    config_seeds()
    tokenizer_seeds()
    bpe_seeds()
    print("seed corpora written to", OUT)
