#!/usr/bin/python3
"""Turns the parts that bench/run.sh collected into one Markdown table per model (printed) and
one JSON file.

    /usr/bin/python3 bench/report.py RUN_DIR OUT_JSON

RUN_DIR holds one folder per model with model_dir.txt (the model's path), and per thread count
T: machine-tT.json (xcap_machine_bench), xcap-tT.json, pytorch-tT.json, onnxruntime-tT.json
(the engines' stage timings), xcap-batch-tT.txt (the summary `xcap batch` printed) and
rss-ENGINE-tT.txt (/usr/bin/time -f %M of one process that loads the model and captions one
image, in KiB). A part that is missing shows as "-".

Derived numbers, from the model's config.json:
- encoder flops of one image: the patch projection, per layer query|key|value, the two
  attention products, attention output and MLP, and enc_to_dec_proj when present;
- decoder weight bytes read per token: every matrix a decoder step multiplies by (self- and
  cross-attention query/output, query|key|value, MLP in and out, per layer, and the lm_head over
  the vocabulary) at 4 bytes a weight; biases, layernorms and caches are left out.
Speed-ups are other engine's time / xcap's time (images/s: xcap's rate / the other's), so > 1
means xcap is faster; memory ratios are xcap's peak RSS / the other's.
"""

import json
import os
import platform
import re
import subprocess
import sys
import time

ENGINES = ("xcap", "pytorch", "onnxruntime")
ENGINE_NAMES = {"xcap": "xcap", "pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
# (key, label, unit scale, unit)
STAGES = (
    ("load", "model load", 1.0, "s"),
    ("preprocess", "preprocessing", 1e3, "ms"),
    ("encoder", "encoder (1 image)", 1e3, "ms"),
    ("cross_kv", "cross K/V", 1e3, "ms"),
    ("decoder_token", "decoder, per token", 1e3, "ms"),
    ("greedy16", "greedy caption, 16 tokens", 1e3, "ms"),
    ("beam4", "4-beam caption, 16 tokens", 1e3, "ms"),
)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def model_numbers(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    enc, dec = cfg["encoder"], cfg["decoder"]
    D, L, I = enc["hidden_size"], enc["num_hidden_layers"], enc["intermediate_size"]
    P, S = enc["patch_size"], enc["image_size"]
    n = (S // P) ** 2
    M = n + 1
    E, Ld, V = dec["n_embd"], dec["n_layer"], dec["vocab_size"]
    F = dec.get("n_inner") or 4 * E
    flops = 2 * n * 3 * P * P * D + L * (2 * M * D * 3 * D + 2 * 2 * M * M * D + 2 * M * D * D + 2 * 2 * M * D * I)
    if D != E:
        flops += 2 * M * D * E
    weights = Ld * (3 * E * E + E * E + E * E + E * E + 2 * E * F) + E * V
    safetensors = os.path.join(model_dir, "model.safetensors")
    return {
        "encoder": f"ViT {S}px/{P}, {L} layers, width {D}",
        "decoder": f"GPT-2 {Ld} layers, width {E}, vocabulary {V}",
        "encoder_flops": flops,
        "decoder_weight_bytes_per_token": 4 * weights,
        "file_bytes": os.path.getsize(safetensors) if os.path.exists(safetensors) else None,
    }


def xcap_batch_rate(text):
    m = re.search(r"([0-9.]+) images/s", text or "")
    return float(m.group(1)) if m else None


def collect(model_run, threads):
    """{engine: {"stages", "batch_images_per_s", "rss_mb", "greedy_tokens", ...}} for one T."""
    out = {}
    for engine in ENGINES:
        part = read_json(os.path.join(model_run, f"{engine}-t{threads}.json")) or {}
        e = {"stages": {k: v["median_s"] for k, v in part.get("stages", {}).items()},
             "reps": {k: v["reps"] for k, v in part.get("stages", {}).items()},
             "greedy_tokens": part.get("greedy_tokens"), "beam_tokens": part.get("beam_tokens"),
             "version": part.get("version")}
        if engine == "xcap":
            e["batch_images_per_s"] = xcap_batch_rate(read_text(os.path.join(model_run, f"xcap-batch-t{threads}.txt")))
        else:
            e["batch_images_per_s"] = (part.get("batch") or {}).get("images_per_s")
        rss = read_text(os.path.join(model_run, f"rss-{engine}-t{threads}.txt"))
        found = re.findall(r"^\s*(\d+)\s*$", rss or "", re.M)
        e["rss_mb"] = int(found[-1]) * 1024 / 1e6 if found else None
        out[engine] = e
    return out


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def derive(engines, machine, numbers):
    """Speed-ups against xcap and the fractions of the machine's limits."""
    x = engines["xcap"]
    r = {}
    for other in ("pytorch", "onnxruntime"):
        o = engines[other]
        r[f"speedup_vs_{other}"] = {k: ratio(o["stages"].get(k), x["stages"].get(k)) for k, *_ in STAGES}
        r[f"speedup_vs_{other}"]["batch"] = ratio(x["batch_images_per_s"], o["batch_images_per_s"])
        r[f"rss_vs_{other}"] = ratio(x["rss_mb"], o["rss_mb"])
        r[f"greedy_tokens_equal_{other}"] = (x["greedy_tokens"] == o["greedy_tokens"]
                                             if x["greedy_tokens"] and o["greedy_tokens"] else None)
    r["beam_tokens_equal_pytorch"] = (x["beam_tokens"] == engines["pytorch"]["beam_tokens"]
                                      if x["beam_tokens"] and engines["pytorch"]["beam_tokens"] else None)
    machine = machine or {}
    for name, e in engines.items():
        enc, tok = e["stages"].get("encoder"), e["stages"].get("decoder_token")
        gflops = numbers["encoder_flops"] / enc * 1e-9 if enc else None
        gbs = numbers["decoder_weight_bytes_per_token"] / tok * 1e-9 if tok else None
        r[f"{name}_encoder_gflops"] = gflops
        r[f"{name}_encoder_of_sgemm"] = ratio(gflops, machine.get("sgemm_encoder_gflops"))
        r[f"{name}_decoder_weight_gbs"] = gbs
        r[f"{name}_decoder_of_bandwidth"] = ratio(gbs, machine.get("bandwidth_gbs"))
    if numbers["file_bytes"] and x["rss_mb"]:
        r["xcap_rss_minus_file_mb"] = x["rss_mb"] - numbers["file_bytes"] / 1e6
    return r


def fmt(v):
    """Three significant digits, without an exponent down to 0.001."""
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) >= 0.001 else f"{v:.1e}"


def pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def speed(v):
    return "-" if v is None else f"{v:.2f}x"


def markdown(label, info, per_threads):
    lines = [f"### {label}", "",
             f"`{info['dir']}`: {info['encoder']}; {info['decoder']}; model.safetensors "
             f"{fmt(info['file_bytes'] / 1e6 if info['file_bytes'] else None)} MB", "",
             "| stage | threads | xcap | PyTorch | ONNX Runtime | xcap vs PyTorch | xcap vs ORT |",
             "|---|---|---|---|---|---|---|"]
    for key, name, scale, unit in STAGES + (("batch", "batch throughput", 1.0, "images/s"),
                                            ("rss", "peak RSS, load + 1 caption", 1.0, "MB")):
        for t, d in per_threads.items():
            e, r = d["engines"], d["ratios"]
            if key == "batch":
                vals = [e[n]["batch_images_per_s"] for n in ENGINES]
                rel = [speed(r[f"speedup_vs_{o}"]["batch"]) for o in ("pytorch", "onnxruntime")]
            elif key == "rss":
                vals = [e[n]["rss_mb"] for n in ENGINES]
                rel = [f"{pct(r[f'rss_vs_{o}'])} of it" if r[f"rss_vs_{o}"] else "-" for o in ("pytorch", "onnxruntime")]
            else:
                vals = [e[n]["stages"].get(key) for n in ENGINES]
                vals = [v * scale if v is not None else None for v in vals]
                rel = [speed(r[f"speedup_vs_{o}"][key]) for o in ("pytorch", "onnxruntime")]
            lines.append(f"| {name} ({unit}) | {t} | " + " | ".join(fmt(v) for v in vals) + " | " + " | ".join(rel) + " |")
    lines += ["", "| threads | sgemm GFLOP/s (encoder shapes) | FMA peak GFLOP/s, AVX2 / AVX-512 "
              "| encoder GFLOP/s: xcap / PyTorch / ORT (of sgemm) "
              "| bandwidth GB/s | decoder weight GB/s: xcap / PyTorch / ORT (of bandwidth) | same greedy tokens "
              "(PyTorch, ORT) | same beam tokens |",
              "|---|---|---|---|---|---|---|---|"]
    for t, d in per_threads.items():
        m, r = d["machine"] or {}, d["ratios"]
        peak = f"{fmt(m.get('fma_peak_avx2_gflops'))} / {fmt(m.get('fma_peak_avx512_gflops'))}"
        enc = " / ".join(f"{fmt(r[f'{n}_encoder_gflops'])} ({pct(r[f'{n}_encoder_of_sgemm'])})" for n in ENGINES)
        dec = " / ".join(f"{fmt(r[f'{n}_decoder_weight_gbs'])} ({pct(r[f'{n}_decoder_of_bandwidth'])})" for n in ENGINES)
        same = ", ".join({True: "yes", False: "no", None: "-"}[r[f"greedy_tokens_equal_{o}"]]
                         for o in ("pytorch", "onnxruntime"))
        beam = {True: "yes", False: "no", None: "-"}[r["beam_tokens_equal_pytorch"]]
        lines.append(f"| {t} | {fmt(m.get('sgemm_encoder_gflops'))} | {peak} | {enc} | {fmt(m.get('bandwidth_gbs'))} | {dec} "
                     f"| {same} | {beam} |")
    blas = next((d["machine"].get("openblas") for d in per_threads.values() if d["machine"]), None)
    versions = ", ".join(f"{ENGINE_NAMES[n]} {v}" for n in ENGINES[1:]
                         for v in [next((d["engines"][n]["version"] for d in per_threads.values()
                                         if d["engines"][n]["version"]), None)] if v)
    lines += ["", f"sgemm: {blas or '-'}; {versions}"]
    return "\n".join(lines) + "\n"


def machine_info(run_dir):
    cpu = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = re.search(r"Model name:\s*(.*)", out).group(1).strip()
    except (OSError, AttributeError):
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(re.search(r"MemTotal:\s*(\d+)", f.read()).group(1))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1e6, 1),
            "kernel": platform.release(),
            "load_average_before": (read_text(os.path.join(run_dir, "loadavg-before.txt")) or "").strip(),
            "load_average_after": " ".join(f"{v:.2f}" for v in os.getloadavg())}


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    run_dir, out_path = argv
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(run_dir),
              "models": []}
    m = result["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; load average before {m['load_average_before']}, "
          f"after {m['load_average_after']}\n")
    for label in sorted(os.listdir(run_dir)):
        model_run = os.path.join(run_dir, label)
        model_dir = (read_text(os.path.join(model_run, "model_dir.txt")) or "").strip()
        if not model_dir:
            continue
        info = dict(label=label, dir=model_dir, **model_numbers(model_dir))
        per_threads = {}
        threads = sorted({int(f[len("machine-t"):-5]) for f in os.listdir(model_run)
                          if f.startswith("machine-t") and f.endswith(".json")})
        for t in threads:
            machine = read_json(os.path.join(model_run, f"machine-t{t}.json"))
            engines = collect(model_run, t)
            per_threads[t] = {"machine": machine, "engines": engines, "ratios": derive(engines, machine, info)}
        info["threads"] = {str(t): d for t, d in per_threads.items()}
        result["models"].append(info)
        print(markdown(label, info, per_threads))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"written: {out_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
