#!/usr/bin/python3
"""Turns the parts that bench/run.sh collected into one Markdown table per model (printed) and
one JSON file.

    /usr/bin/python3 bench/report.py RUN_DIR OUT_JSON

RUN_DIR holds one folder per model with model_dir.txt (the model's path), and per thread count
T and round R (bench/run.sh runs the engines in turns, R = 1, 2, ...): ENGINE-tT-rR.json for
ENGINE in xcap, xcap-f16, xcap-q8 (xcap on the model's `xcap quantize` copies), pytorch,
onnxruntime (stage timings, each a median over the round's repetitions); xcap*-batch-tT-rR.txt
(the summary `xcap batch` printed); machine-tT-rR.json (xcap_machine_bench, R = 0 before the
first round and R after round R); and once per T, rss-ENGINE-tT.txt (/usr/bin/time -f %M of one
process that loads the model and captions one image, in KiB). Parts without "-rR" (one round, as
runs before rounds were written) are read as round 1; an engine without parts is left out; a
missing part shows as "-".

This machine is shared and its speed drifts by tens of percent within minutes, for every engine
alike, so each number is the best over the rounds, for every engine and for the machine's
limits alike: a stage's time is its lowest round median, a batch rate and a limit their highest
reading; all round values are kept in the JSON ("rounds", "readings").

Derived numbers, from the model's config.json:
- encoder flops of one image: the patch projection, per layer query|key|value, the two
  attention products, attention output and MLP, and enc_to_dec_proj when present;
- decoder weight bytes read per token: every matrix a decoder step multiplies by (self- and
  cross-attention query/output, query|key|value, MLP in and out, per layer, and the lm_head over
  the vocabulary) at 4 bytes a weight (xcap f16: 2; q8: 1, plus a float32 scale per output
  channel); biases, layernorms and caches are left out.
A decoder's fraction of the bandwidth is, for xcap (whose xcap_stages takes decoder sweeps and
bandwidth readings of the same length in turn: stage "decoder_paired"), the median over every
sweep of all rounds of its weight bytes per second over the higher of the readings just before
and just after it; the memory of this machine swings between about 35 and 70 GB/s within
minutes, so a step and a reading minutes apart say little about each other. The fraction of the
best reading of the whole run is kept too ("..._of_best_bandwidth"); it is the only one for the
other engines and for runs without paired sweeps.
Speed-ups are the other engine's time / xcap's time (images/s: xcap's rate / the other's), so
> 1 means xcap is faster; memory ratios are xcap's peak RSS / the other's.
"""

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

# xcap on the model as given, and on its `xcap quantize` copies when run.sh made them
XCAP_VARIANTS = ("xcap", "xcap-f16", "xcap-q8")
OTHERS = ("pytorch", "onnxruntime")
ENGINES = XCAP_VARIANTS + OTHERS
ENGINE_NAMES = {"xcap": "xcap", "xcap-f16": "xcap f16", "xcap-q8": "xcap q8", "pytorch": "PyTorch",
                "onnxruntime": "ONNX Runtime"}
SHORT_NAMES = {"xcap": "xcap", "xcap-q8": "q8", "pytorch": "PyTorch", "onnxruntime": "ORT"}
# Bytes per weight of a linear layer as stored in memory while decoding (q8: plus one float32
# scale per output channel).
WEIGHT_BYTES = {"xcap": 4, "xcap-f16": 2, "xcap-q8": 1, "pytorch": 4, "onnxruntime": 4}
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
    # per layer: c_attn E->3E, c_proj, q_attn, cross c_proj (E->E each), c_fc E->F, mlp c_proj F->E
    matrices = [(E, 3 * E), (E, E), (E, E), (E, E), (E, F), (F, E)] * Ld + [(E, V)]
    safetensors = os.path.join(model_dir, "model.safetensors")
    return {
        "encoder": f"ViT {S}px/{P}, {L} layers, width {D}",
        "decoder": f"GPT-2 {Ld} layers, width {E}, vocabulary {V}",
        "encoder_flops": flops,
        "decoder_weights_per_token": sum(k * n for k, n in matrices),
        "decoder_output_channels": sum(n for _, n in matrices),
        "file_bytes": os.path.getsize(safetensors) if os.path.exists(safetensors) else None,
    }


def decoder_bytes(numbers, engine):
    b = WEIGHT_BYTES[engine] * numbers["decoder_weights_per_token"]
    return b + 4 * numbers["decoder_output_channels"] if engine == "xcap-q8" else b


def batch_rate(text):
    m = re.search(r"([0-9.]+) images/s", text or "")
    return float(m.group(1)) if m else None


def round_parts(model_run, stem, ext):
    """The paths of STEM-rR.EXT in round order, or [STEM.EXT] for a run without rounds."""
    found = []
    for f in os.listdir(model_run):
        m = re.fullmatch(re.escape(stem) + r"-r(\d+)" + re.escape(ext), f)
        if m:
            found.append((int(m.group(1)), os.path.join(model_run, f)))
    if found:
        return [path for _, path in sorted(found)]
    legacy = os.path.join(model_run, stem + ext)
    return [legacy] if os.path.exists(legacy) else []


def present_engines(model_run):
    return [e for e in ENGINES if any(re.fullmatch(re.escape(e) + r"-t\d+(-r\d+)?\.json", f)
                                      for f in os.listdir(model_run))]


def best_of(values, pick):
    values = [v for v in values if v is not None]
    return pick(values) if values else None


def collect(model_run, threads, engines):
    """{engine: {"stages", "rounds", "batch_images_per_s", "rss_mb", "greedy_tokens", ...}} for
    one T: each stage's lowest round median, the highest batch rate."""
    out = {}
    for engine in engines:
        parts = [p for p in (read_json(path) for path in round_parts(model_run, f"{engine}-t{threads}", ".json")) if p]
        rounds = {}
        for part in parts:
            for k, v in part.get("stages", {}).items():
                if "median_s" in v:
                    rounds.setdefault(k, []).append(v["median_s"])
        first = parts[0] if parts else {}
        e = {"stages": {k: min(v) for k, v in rounds.items()}, "rounds": rounds,
             "reps": {k: v["reps"] for k, v in first.get("stages", {}).items() if "reps" in v},
             "greedy_tokens": first.get("greedy_tokens"), "beam_tokens": first.get("beam_tokens"),
             "version": first.get("version"), "threads_config": first.get("threads_config")}
        # every round must have produced the same tokens
        # decoder sweeps and the bandwidth readings around each: (seconds per token, before, after)
        e["paired"] = [(t, p["bandwidth_gbs"][i], p["bandwidth_gbs"][i + 1])
                       for p in (part["stages"]["decoder_paired"] for part in parts
                                 if "decoder_paired" in part.get("stages", {}))
                       for i, t in enumerate(p["step_s"])]
        e["tokens_stable"] = all(p.get("greedy_tokens") == e["greedy_tokens"] and p.get("beam_tokens") ==
                                 e["beam_tokens"] for p in parts)
        if engine in XCAP_VARIANTS:  # `xcap batch`'s own summary line
            rates = [batch_rate(read_text(path)) for path in round_parts(model_run, f"{engine}-batch-t{threads}", ".txt")]
        else:
            rates = [(p.get("batch") or {}).get("images_per_s") for p in parts]
        e["batch_rounds"] = rates
        e["batch_images_per_s"] = best_of(rates, max)
        rss = read_text(os.path.join(model_run, f"rss-{engine}-t{threads}.txt"))
        found = re.findall(r"^\s*(\d+)\s*$", rss or "", re.M)
        e["rss_mb"] = int(found[-1]) * 1024 / 1e6 if found else None
        out[engine] = e
    return out


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def same(a, b):
    return a == b if a and b else None


LIMITS = ("sgemm_encoder_gflops", "fma_peak_avx2_gflops", "fma_peak_avx512_gflops", "bandwidth_gbs")


def best_limits(readings):
    """The machine's limits as the highest of its readings (before the first round and after
    each), with all of them kept under "readings"."""
    readings = [r for r in readings if r]
    if not readings:
        return None
    best = dict(readings[0])
    best["readings"] = {k: [r.get(k) for r in readings] for k in LIMITS}
    for k in LIMITS:
        best[k] = best_of(best["readings"][k], max)
    return best


def derive(engines, machine, numbers):
    """Speed-ups of each xcap variant against the other engines, token agreement, and each
    engine's fraction of the machine's limits."""
    r = {}
    for xv in (e for e in XCAP_VARIANTS if e in engines):
        x = engines[xv]
        for other in (o for o in OTHERS if o in engines):
            o = engines[other]
            up = {k: ratio(o["stages"].get(k), x["stages"].get(k)) for k, *_ in STAGES}
            up["batch"] = ratio(x["batch_images_per_s"], o["batch_images_per_s"])
            r[f"{xv}_speedup_vs_{other}"] = up
            r[f"{xv}_rss_vs_{other}"] = ratio(x["rss_mb"], o["rss_mb"])
            r[f"{xv}_greedy_tokens_equal_{other}"] = same(x["greedy_tokens"], o["greedy_tokens"])
            r[f"{xv}_beam_tokens_equal_{other}"] = same(x["beam_tokens"], o["beam_tokens"])
    machine = machine or {}
    for name, e in engines.items():
        enc, tok = e["stages"].get("encoder"), e["stages"].get("decoder_token")
        gflops = numbers["encoder_flops"] / enc * 1e-9 if enc else None
        gbs = decoder_bytes(numbers, name) / tok * 1e-9 if tok else None
        r[f"{name}_encoder_gflops"] = gflops
        r[f"{name}_encoder_of_sgemm"] = ratio(gflops, machine.get("sgemm_encoder_gflops"))
        peak = max(machine.get("fma_peak_avx2_gflops") or 0, machine.get("fma_peak_avx512_gflops") or 0)
        r[f"{name}_encoder_of_peak"] = ratio(gflops, peak or None)
        r[f"{name}_decoder_weight_gbs"] = gbs
        r[f"{name}_decoder_of_best_bandwidth"] = ratio(gbs, machine.get("bandwidth_gbs"))
        paired = sorted(decoder_bytes(numbers, name) / t * 1e-9 / max(before, after)
                        for t, before, after in e.get("paired") or [])
        r[f"{name}_decoder_paired_sweeps"] = len(paired)
        r[f"{name}_decoder_of_paired_bandwidth"] = statistics.median(paired) if paired else None
        r[f"{name}_decoder_of_bandwidth"] = (r[f"{name}_decoder_of_paired_bandwidth"] if paired
                                             else r[f"{name}_decoder_of_best_bandwidth"])
    x = engines.get("xcap")
    if numbers["file_bytes"] and x and x["rss_mb"]:
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


def yes_no(v):
    return {True: "yes", False: "no", None: "-"}[v]


def n_rounds(per_threads):
    return max((len(v) for d in per_threads.values() for e in d["engines"].values() for v in e["rounds"].values()),
               default=0)


def markdown(label, info, per_threads):
    first = next(iter(per_threads.values()))["engines"]
    engines = list(first)
    pairs = [(xv, o) for xv in ("xcap", "xcap-q8") if xv in first for o in OTHERS if o in first]
    lines = [f"### {label}", "",
             f"`{info['dir']}`: {info['encoder']}; {info['decoder']}; model.safetensors "
             f"{fmt(info['file_bytes'] / 1e6 if info['file_bytes'] else None)} MB. "
             f"Each time is an engine's best of {n_rounds(per_threads)} round(s).", "",
             "| stage | threads | " + " | ".join(ENGINE_NAMES[e] for e in engines) + " | "
             + " | ".join(f"{SHORT_NAMES[xv]} vs {SHORT_NAMES[o]}" for xv, o in pairs) + " |",
             "|---|---|" + "---|" * (len(engines) + len(pairs))]
    for key, name, scale, unit in STAGES + (("batch", "batch throughput", 1.0, "images/s"),
                                            ("rss", "peak RSS, load + 1 caption", 1.0, "MB")):
        for t, d in per_threads.items():
            e, r = d["engines"], d["ratios"]
            if key == "batch":
                vals = [e[n]["batch_images_per_s"] for n in engines]
                rel = [speed(r[f"{xv}_speedup_vs_{o}"]["batch"]) for xv, o in pairs]
            elif key == "rss":
                vals = [e[n]["rss_mb"] for n in engines]
                rel = [f"{pct(r[f'{xv}_rss_vs_{o}'])} of it" if r[f"{xv}_rss_vs_{o}"] else "-" for xv, o in pairs]
            else:
                vals = [e[n]["stages"].get(key) for n in engines]
                vals = [v * scale if v is not None else None for v in vals]
                rel = [speed(r[f"{xv}_speedup_vs_{o}"][key]) for xv, o in pairs]
            lines.append(f"| {name} ({unit}) | {t} | " + " | ".join(fmt(v) for v in vals) + " | "
                         + " | ".join(rel) + " |")
    lines += ["", "| threads | OpenBLAS sgemm, encoder shapes (GFLOP/s) | FMA peak AVX2 / AVX-512 (GFLOP/s) "
              "| streaming read, best reading (GB/s) |", "|---|---|---|---|"]
    for t, d in per_threads.items():
        m = d["machine"] or {}
        bw = fmt(m.get("bandwidth_gbs"))
        if m.get("readings") and len(m["readings"]["bandwidth_gbs"]) > 1:
            bw += " (readings: %s)" % ", ".join(fmt(v) for v in m["readings"]["bandwidth_gbs"])
        lines.append(f"| {t} | {fmt(m.get('sgemm_encoder_gflops'))} | {fmt(m.get('fma_peak_avx2_gflops'))} / "
                     f"{fmt(m.get('fma_peak_avx512_gflops'))} | {bw} |")
    lines += ["", "| engine | threads | encoder GFLOP/s | of sgemm | of FMA peak | decoder weight GB/s (best round) "
              "| of best bandwidth reading | of bandwidth at the same moment (sweeps) |", "|---|---|---|---|---|---|---|---|"]
    for n in engines:
        for t, d in per_threads.items():
            r = d["ratios"]
            sweeps = r[f"{n}_decoder_paired_sweeps"]
            same_moment = f"{pct(r[f'{n}_decoder_of_paired_bandwidth'])} ({sweeps})" if sweeps else "-"
            lines.append(f"| {ENGINE_NAMES[n]} | {t} | {fmt(r[f'{n}_encoder_gflops'])} | {pct(r[f'{n}_encoder_of_sgemm'])} "
                         f"| {pct(r[f'{n}_encoder_of_peak'])} | {fmt(r[f'{n}_decoder_weight_gbs'])} "
                         f"| {pct(r[f'{n}_decoder_of_best_bandwidth'])} | {same_moment} |")
    lines += acceptance(info, per_threads)
    lines.append("")
    for t, d in per_threads.items():
        r = d["ratios"]
        agree = [f"{ENGINE_NAMES[xv]} = {ENGINE_NAMES[o]}: greedy {yes_no(r[f'{xv}_greedy_tokens_equal_{o}'])}"
                 + (f", beam {yes_no(r[f'{xv}_beam_tokens_equal_{o}'])}" if o == "pytorch" else "")
                 for xv in XCAP_VARIANTS if xv in d["engines"] for o in OTHERS if o in d["engines"]]
        lines.append(f"Same tokens, {t} thread(s): " + "; ".join(agree) + ".")
        unstable = [ENGINE_NAMES[n] for n, e in d["engines"].items() if not e["tokens_stable"]]
        if unstable:
            lines.append(f"Tokens that changed between rounds, {t} thread(s): " + ", ".join(unstable) + ".")
        tc = d["engines"].get("pytorch", {}).get("threads_config")
        if tc:
            lines.append(f"PyTorch at {t} thread(s) ran with torch.set_num_threads({tc['torch_threads']}) and "
                         f"{tc['blas_threads']} OpenBLAS thread(s), the faster of: "
                         + ", ".join(f"{k} {v:.3g} s" for k, v in tc["trial_s"].items()) + ".")
    blas = next((d["machine"].get("openblas") for d in per_threads.values() if d["machine"]), None)
    versions = ", ".join(f"{ENGINE_NAMES[n]} {v}" for n in OTHERS if n in engines
                         for v in [next((d["engines"][n]["version"] for d in per_threads.values()
                                         if d["engines"][n]["version"]), None)] if v)
    lines += ["", f"sgemm: {blas or '-'}; {versions}. ONNX Runtime starts from the reference's pixel values, so "
              "its captions and batch leave out preprocessing (and file decoding), and it has no beam search here; "
              "xcap and PyTorch captions include preprocessing, their batch runs file decoding too."]
    return "\n".join(lines) + "\n"


def acceptance(info, per_threads):
    """Issue 8's acceptance lines, read off this run at 2 threads (the largest count when 2 was
    not run): each number, its bar and whether it holds."""
    t = 2 if 2 in per_threads else max(per_threads)
    d = per_threads[t]
    r, e = d["ratios"], d["engines"]

    def row(what, value, bar, shown):
        held = "-" if value is None else ("holds" if value >= bar else "misses")
        return f"| {what} | {shown(value)} | {shown(bar)} | {held} |"

    def bandwidth_kind(engine):
        sweeps = r.get(f"{engine}_decoder_paired_sweeps")
        return f"the bandwidth at the same moment (median of {sweeps} sweeps)" if sweeps else "the best bandwidth reading"

    def times(v):
        return "-" if v is None else f"{v:.2f}x"

    rows = [row("greedy caption, xcap fp32 vs PyTorch", (r.get("xcap_speedup_vs_pytorch") or {}).get("greedy16"), 1.5, times),
            row("greedy caption, xcap q8 vs PyTorch", (r.get("xcap-q8_speedup_vs_pytorch") or {}).get("greedy16"), 3.0, times),
            row("encoder, xcap vs ONNX Runtime", (r.get("xcap_speedup_vs_onnxruntime") or {}).get("encoder"), 1.0, times),
            row("encoder, xcap of the sgemm rate", r.get("xcap_encoder_of_sgemm"), 0.7, pct),
            row(f"decoder step, xcap fp32 weight bytes/s of {bandwidth_kind('xcap')}", r.get("xcap_decoder_of_bandwidth"),
                0.7, pct),
            row(f"decoder step, xcap q8 weight bytes/s of {bandwidth_kind('xcap-q8')}", r.get("xcap-q8_decoder_of_bandwidth"),
                0.7, pct)]
    extra = r.get("xcap_rss_minus_file_mb")
    rows.append(f"| peak RSS fp32 minus model file | {fmt(extra)} MB | 100 MB | "
                f"{'-' if extra is None else 'holds' if extra <= 100 else 'misses'} |")
    return ["", f"Issue 8's bars at {t} thread(s):", "", "| measure | this run | bar | |", "|---|---|---|---|"] + rows


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
        threads = sorted({int(m.group(1)) for m in (re.fullmatch(r"machine-t(\d+)(-r\d+)?\.json", f)
                                                     for f in os.listdir(model_run)) if m})
        present = present_engines(model_run)
        for t in threads:
            paths = round_parts(model_run, f"machine-t{t}", ".json")
            after = os.path.join(model_run, f"machine-after-t{t}.json")  # runs before rounds
            machine = best_limits([read_json(p) for p in paths + ([after] if os.path.exists(after) else [])])
            engines = collect(model_run, t, present)
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
