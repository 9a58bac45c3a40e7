#!/usr/bin/python3
"""The PyTorch reference's side of the benchmark (bench/run.sh): weights/reference/hf_vit_gpt2.py
run eagerly on torch.set_num_threads(THREADS) threads. Prints one JSON object with the same
stage names as xcap_stages.

    /usr/bin/python3 bench/torch_stages.py MODEL_DIR IMAGE_DIR THREADS [SECONDS] [MIN_REPS] [--rss-only]

The first PNG of IMAGE_DIR (sorted) is the image of every stage; batch captions all of them.
Stages: load (from_pretrained), preprocess (Pillow resize + normalize of the decoded image),
encoder, cross_kv, decoder_token (one position for one sequence, averaged over positions
0..15), greedy16 and beam4 (generate.caption from decoded pixels, preprocessing included,
min_new_tokens = max_new_tokens = 16), and batch: images/s over the folder, 8 images per
encoder pass and their greedy steps run as the rows of one decoder call (file decoding and
preprocessing included, as in `xcap batch`). --rss-only loads and captions the image once.

Threads: PyTorch's own pool (torch.set_num_threads) and its BLAS's pool are separate. With
Debian's torch, linked with OpenBLAS's pthread build, both at 2 threads on 2 cores
oversubscribe them (OpenBLAS's threads spin while torch's wait) and a decoder step runs 3-5
times slower than with either pool alone. So the run first tries (torch threads, BLAS threads)
= (T, T) and, for T > 1, (1, T), and keeps the faster; the JSON says which ("threads_config").
"""

import json
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "weights", "reference"))

import generate  # noqa: E402
import hf_vit_gpt2 as ref  # noqa: E402

CAPTION_TOKENS = 16
BATCH = 8


def openblas_threads_setter():
    """openblas_set_num_threads of the OpenBLAS that torch has loaded, or None (MKL, or a BLAS
    that follows torch.set_num_threads)."""
    import ctypes
    with open("/proc/self/maps") as f:
        libs = sorted({line.split()[-1] for line in f if "libopenblas" in line and line.split()[-1].startswith("/")})
    for lib in libs:
        try:
            return ctypes.CDLL(lib).openblas_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


def fastest_threads(model, threads, pixels, start_token):
    """Sets and returns the faster of (torch, BLAS) threads = (T, T) and (1, T) on one encoder
    pass plus four decoder steps (see the module's docstring)."""
    set_blas = openblas_threads_setter()
    candidates = [(threads, threads)] + ([(1, threads)] if threads > 1 and set_blas else [])
    tried = {}
    for intra, blas in candidates:
        torch.set_num_threads(intra)
        if set_blas:
            set_blas(blas)

        def trial():
            cache = model.new_cache(model.encode(pixels))
            for _ in range(4):
                model.decode(torch.tensor([[start_token]]), cache)
        tried[(intra, blas)] = time_stage(trial, 0, 2)["min_s"]
    intra, blas = min(tried, key=tried.get)
    torch.set_num_threads(intra)
    if set_blas:
        set_blas(blas)
    return {"torch_threads": intra, "blas_threads": blas if set_blas else None,
            "trial_s": {f"torch {i}, blas {b}": t for (i, b), t in tried.items()}}


def time_stage(fn, seconds, min_reps, per=1):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) / per)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times)}


def settings(model_dir, beams):
    return generate.load_settings(model_dir, {
        "max_new_tokens": CAPTION_TOKENS, "min_new_tokens": CAPTION_TOKENS, "num_beams": beams,
        "do_sample": False, "length_penalty": 1.0, "early_stopping": False, "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0, "num_return_sequences": 1})


def pixels_of(image, proc):
    return torch.from_numpy(ref.preprocess(image, proc)[1])


def caption(model, proc, image, s):
    return generate.caption(model, pixels_of(image, proc), s)[0].tokens


def decode_steps(model, cross, tokens):
    """The decoder at positions 0..len(tokens)-1 for one row per image; returns the last logits."""
    cache = ref.DecoderCache(cross)
    for pos in range(len(tokens)):
        logits = model.decode(tokens[pos][:, None], cache)[:, -1, :]
    return logits


def greedy_batch(model, proc, paths, s):
    """Greedy captions of several image files at once: one encoder pass, then every step one
    decoder call for all of them; eos is banned (exactly CAPTION_TOKENS tokens each)."""
    pixels = torch.stack([pixels_of(ref.load_rgb(p), proc) for p in paths])
    cache = model.new_cache(model.encode(pixels))
    tokens = torch.full((len(paths), 1), s.decoder_start_token_id, dtype=torch.long)
    for _ in range(CAPTION_TOKENS):
        logits = model.decode(tokens[:, -1:], cache)[:, -1, :]
        logits[:, s.eos_token_id] = -float("inf")
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
    return tokens[:, 1:]


def main(argv):
    rss_only = "--rss-only" in argv
    args = [a for a in argv if a != "--rss-only"]
    if len(args) < 3:
        sys.exit(__doc__)
    model_dir, image_dir, threads = args[0], args[1], int(args[2])
    seconds = float(args[3]) if len(args) > 3 else 2.0
    min_reps = int(args[4]) if len(args) > 4 else 5
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    paths = sorted(os.path.join(image_dir, f) for f in os.listdir(image_dir) if f.endswith(".png"))
    image = ref.load_rgb(paths[0])
    proc = ref.load_processor(model_dir)
    greedy, beam = settings(model_dir, 1), settings(model_dir, 4)
    with torch.inference_mode():
        model = ref.VisionEncoderDecoder.from_pretrained(model_dir)
        config = fastest_threads(model, threads, pixels_of(image, proc)[None], greedy.decoder_start_token_id)
        if rss_only:
            caption(model, proc, image, greedy)
            return
        st = {"load": time_stage(lambda: ref.VisionEncoderDecoder.from_pretrained(model_dir), seconds, min_reps)}
        st["preprocess"] = time_stage(lambda: pixels_of(image, proc), seconds, min_reps)
        pixels = pixels_of(image, proc)[None]
        st["encoder"] = time_stage(lambda: model.encode(pixels), seconds, min_reps)
        memory = model.encode(pixels)
        st["cross_kv"] = time_stage(lambda: model.decoder.cross_kv(memory), seconds, min_reps)
        cross = model.decoder.cross_kv(memory)
        result = {}
        st["greedy16"] = time_stage(lambda: result.update(greedy=caption(model, proc, image, greedy)), seconds, min_reps)
        fed = [torch.tensor([t]) for t in [greedy.decoder_start_token_id] + result["greedy"][:CAPTION_TOKENS - 1]]
        st["decoder_token"] = time_stage(lambda: decode_steps(model, cross, fed), seconds, min_reps, CAPTION_TOKENS)
        st["beam4"] = time_stage(lambda: result.update(beam=caption(model, proc, image, beam)), seconds, min_reps)
        t0 = time.perf_counter()
        for i in range(0, len(paths), BATCH):
            greedy_batch(model, proc, paths[i:i + BATCH], greedy)
        rate = len(paths) / (time.perf_counter() - t0)
    print(json.dumps({"engine": "pytorch", "threads": threads, "threads_config": config,
                      "version": torch.__version__, "stages": st,
                      "batch": {"images": len(paths), "images_per_s": rate, "batch_size": BATCH},
                      "greedy_tokens": result["greedy"], "beam_tokens": result["beam"]}))


if __name__ == "__main__":
    main(sys.argv[1:])
