"""Trains xcap's default captioning model (ViT encoder + GPT-2 decoder with cross-attention, the
Hugging Face VisionEncoderDecoder layout) on scenes of weights/world generated on the fly.

    /usr/bin/python3 weights/train/train.py --ckpt-dir CKPT --minutes 150 --export weights/default

- Model: weights/reference/hf_vit_gpt2.py, so parameter names and math are the checkpoint's.
- Data: scene `samples_seen + i` of the training stream (seed --seed, split train) for the i-th
  example of the next batch: every example is a new scene, and a resumed run sees the same
  stream. Images are rendered at the world's size and resized to the model's input size with
  Pillow's bilinear filter: the path the image processor (and xcap) take for such a file.
- Schedule: linear warm-up then cosine decay over the budget. With --minutes the schedule's
  clock is the run's wall time (checkpointed, so a resumed run continues the same schedule and
  the whole run stays within the budget); with --steps it is the step count, which makes a
  run bit-for-bit repeatable on one machine.
- Checkpoints (model, optimizer, RNG state, samples seen, clock) every --ckpt-minutes into
  --ckpt-dir, written atomically; SIGINT/SIGTERM save one and exit. Run the same command again
  to resume. The learning curve goes to CKPT/log.jsonl and CKPT/curve.tsv: samples seen, wall
  minutes, training loss, greedy exact match on a fixed validation set (seed --val-seed,
  disjoint from the training stream) and on held-out-pair scenes.
- --export DIR (at the end, or alone with an existing checkpoint and --export-only) writes the
  HF directory: config.json, model.safetensors, vocab.json, merges.txt,
  preprocessor_config.json, generation_config.json (+ tokenizer_config.json,
  special_tokens_map.json).
"""

import argparse
import json
import math
import os
import signal
import sys
import time

# OpenMP threads that spin while waiting for each other lose whole scheduler slices when
# another process shares the two cores (measured: a small step 7x slower with 2 threads than
# with 1); sleeping waits keep 2 threads useful. Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(WEIGHTS, "reference"))
sys.path.insert(0, os.path.join(WEIGHTS, "world"))

from bpe_tokenizer import ByteLevelBPE, pretokenize  # noqa: E402
from hf_vit_gpt2 import (Conv1D, GPT2Config, ProcessorConfig, VEDConfig,  # noqa: E402
                         ViTConfig, VisionEncoderDecoder)
from world import DEFAULT_SIZE, World  # noqa: E402

TOKENIZER_DIR = os.path.join(WEIGHTS, "world", "tokenizer")
EOS = "<|endoftext|>"
CHECKPOINT = "checkpoint.pt"

# The settings that define a run; stored in the checkpoint and taken from it on resume.
RUN_KEYS = ("image_size", "patch", "dim", "enc_layers", "dec_layers", "heads", "mlp_ratio",
            "n_positions", "max_length", "render_size", "batch", "lr", "min_lr_ratio",
            "warmup", "weight_decay", "beta2", "label_smoothing", "grad_clip", "pos_init",
            "aux_weight",
            "seed", "val_seed", "val_count", "heldout_val_count", "minutes", "steps")


def ap_defaults(key):
    """The command-line default of a run setting."""
    return getattr(parse_args(["--ckpt-dir", "-", "--steps", "1"]), key)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Train xcap's default captioning model.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--ckpt-dir", required=True, help="checkpoints and logs; resumes from it")
    ap.add_argument("--export", default=None, help="write the final model here (HF layout)")
    ap.add_argument("--export-only", action="store_true",
                    help="export the checkpoint in --ckpt-dir without training")
    budget = ap.add_argument_group("budget (one of them)")
    budget.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps")
    m = ap.add_argument_group("model")
    m.add_argument("--image-size", type=int, default=96)
    m.add_argument("--patch", type=int, default=16)
    m.add_argument("--dim", type=int, default=192, help="width of encoder and decoder")
    m.add_argument("--enc-layers", type=int, default=4)
    m.add_argument("--dec-layers", type=int, default=3)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--mlp-ratio", type=int, default=4)
    m.add_argument("--n-positions", type=int, default=32)
    m.add_argument("--max-length", type=int, default=16,
                   help="generation max_length (start token included)")
    m.add_argument("--pos-init", choices=("sincos", "random"), default="sincos",
                   help="ViT position embeddings start as a 2-D sine-cosine table or N(0, 0.02)")
    t = ap.add_argument_group("training")
    t.add_argument("--render-size", type=int, default=DEFAULT_SIZE)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--min-lr-ratio", type=float, default=0.02, help="final lr / peak lr")
    t.add_argument("--warmup", type=float, default=0.03, help="share of the budget")
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--beta2", type=float, default=0.98)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--aux-weight", type=float, default=0.0,
                   help="weight of a training-only patch-labelling loss on the encoder (0: "
                        "off; short runs measured no gain, see README)")
    t.add_argument("--seed", type=int, default=1, help="training stream and initialisation")
    t.add_argument("--val-seed", type=int, default=1001)
    t.add_argument("--val-count", type=int, default=300)
    t.add_argument("--heldout-val-count", type=int, default=100)
    o = ap.add_argument_group("bookkeeping")
    o.add_argument("--threads", type=int, default=2)
    o.add_argument("--ckpt-minutes", type=float, default=5.0)
    o.add_argument("--eval-minutes", type=float, default=10.0,
                   help="validation interval (each pass takes time from the budget)")
    o.add_argument("--log-seconds", type=float, default=30.0)
    o.add_argument("--no-eval", action="store_true", help="skip validation (throughput runs)")
    args = ap.parse_args(argv)
    if args.export_only and not args.export:
        ap.error("--export-only needs --export DIR")
    if not args.export_only and (args.minutes is None) == (args.steps is None):
        ap.error("give exactly one of --minutes and --steps")
    if args.image_size % args.patch:
        ap.error(f"--image-size {args.image_size} is not a multiple of --patch {args.patch}")
    return args


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------


def model_config(run, vocab_size, eos_id):
    enc = ViTConfig(hidden_size=run["dim"], num_hidden_layers=run["enc_layers"],
                    num_attention_heads=run["heads"],
                    intermediate_size=run["mlp_ratio"] * run["dim"],
                    image_size=run["image_size"], patch_size=run["patch"],
                    encoder_stride=run["patch"])
    dec = GPT2Config(vocab_size=vocab_size, n_positions=run["n_positions"], n_embd=run["dim"],
                     n_layer=run["dec_layers"], n_head=run["heads"],
                     n_inner=run["mlp_ratio"] * run["dim"],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # fresh data: no dropout
                     bos_token_id=eos_id, eos_token_id=eos_id,
                     add_cross_attention=True, is_decoder=True)
    return VEDConfig(encoder=enc, decoder=dec, decoder_start_token_id=eos_id,
                     pad_token_id=eos_id, eos_token_id=eos_id, tie_word_embeddings=True)


def sincos_2d(grid, dim):
    """[grid*grid, dim] 2-D sine-cosine position table (MAE's recipe): half the channels
    encode the row, half the column, each as sines and cosines of geometric frequencies."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (np.arange(quarter, dtype=np.float64) / quarter))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64),
                             np.arange(grid, dtype=np.float64), indexing="ij")
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angles = coord[:, None] * omega[None]
        parts += [np.sin(angles), np.cos(angles)]
    table = np.concatenate(parts, axis=1)
    if table.shape[1] < dim:
        table = np.pad(table, ((0, 0), (0, dim - table.shape[1])))
    return torch.tensor(table, dtype=torch.float32)


def init_weights(model, run):
    """transformers' initialisation (weights N(0, 0.02) truncated at 2 sigma, zero biases, unit
    LayerNorms, GPT-2's c_proj scaled by 1/sqrt(2 n_layer)), with the ViT position table
    optionally a 2-D sine-cosine table (then trained like any weight)."""
    std = 0.02
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, Conv1D)):
            scale = std
            if name.startswith("decoder.") and name.endswith("c_proj"):
                scale = std / math.sqrt(2 * run["dec_layers"])
            torch.nn.init.trunc_normal_(module.weight, 0.0, scale, -2 * scale, 2 * scale)
            if getattr(module, "bias", None) is not None:
                torch.nn.init.zeros_(module.bias)
    emb = model.encoder.embeddings
    torch.nn.init.trunc_normal_(emb.cls_token, 0.0, std, -2 * std, 2 * std)
    if run["pos_init"] == "sincos":
        grid = run["image_size"] // run["patch"]
        with torch.no_grad():
            emb.position_embeddings.zero_()
            emb.position_embeddings[0, 1:] = sincos_2d(grid, run["dim"])
    else:
        torch.nn.init.trunc_normal_(emb.position_embeddings, 0.0, std, -2 * std, 2 * std)


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "position_embeddings" in name or "cls_token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class PatchLabeller(torch.nn.Module):
    """Training-only head (never exported): from each patch token of the encoder's memory,
    the class of the object covering the patch centre, or "background". The captioning loss
    reaches the encoder only through cross-attention, and a model trained on it alone sits
    for a long time at the loss of a caption with the right grammar and colour but guessed
    objects; labelling every patch teaches the encoder what and where the objects are
    directly. It changes nothing in the exported architecture."""

    def __init__(self, dim, n_classes):
        super().__init__()
        self.classify = torch.nn.Linear(dim, n_classes + 1)   # last index: background

    def forward(self, memory):
        return self.classify(memory[:, 1:])                   # CLS excluded


def patch_labels(scenes, run, n_classes):
    """[B, g*g] class index of the object whose box (scaled to the model's input) contains each
    patch centre, n_classes where none does (row-major patches, as the encoder orders them)."""
    grid = run["image_size"] // run["patch"]
    scale = run["image_size"] / run["render_size"]
    centres = (np.arange(grid) + 0.5) * run["patch"] / scale     # in scene pixels
    labels = np.full((len(scenes), grid, grid), n_classes, np.int64)
    for i, scene in enumerate(scenes):
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            rows = (centres >= y0) & (centres < y1)
            cols = (centres >= x0) & (centres < x1)
            labels[i][np.ix_(rows, cols)] = obj["class"]
    return torch.from_numpy(labels.reshape(len(scenes), -1))


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


class CaptionCodec:
    """Caption text <-> token ids with the world's tokenizer; pieces cached (the language has
    a few hundred words)."""

    def __init__(self, tokenizer_dir=TOKENIZER_DIR):
        self.tok = ByteLevelBPE.from_files(os.path.join(tokenizer_dir, "vocab.json"),
                                           os.path.join(tokenizer_dir, "merges.txt"))
        self.eos = self.tok.vocab[EOS]
        self.vocab_size = len(self.tok.vocab)
        self._pieces = {}

    def encode(self, text):
        ids = []
        for piece in pretokenize(text):
            cached = self._pieces.get(piece)
            if cached is None:
                cached = self._pieces[piece] = self.tok.encode(piece)
            ids += cached
        return ids

    def decode(self, ids):
        return self.tok.decode(ids)


def pixel_values(images):
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] as ViTImageProcessor computes them (rescale
    in float64 stored as float32, then (x - 0.5) / 0.5 in float32)."""
    x = (images.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def teacher_batch(codec, captions):
    """decoder_input_ids [B, T] = start + caption (padded with eos); labels [B, T] = caption +
    eos (padding -100, ignored by the loss)."""
    seqs = [codec.encode(c) for c in captions]
    t = max(len(s) for s in seqs) + 1
    inputs = torch.full((len(seqs), t), codec.eos, dtype=torch.long)
    labels = torch.full((len(seqs), t), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        inputs[i, 1:len(s) + 1] = torch.tensor(s)
        labels[i, :len(s)] = torch.tensor(s)
        labels[i, len(s)] = codec.eos
    return inputs, labels


class ValidationSet:
    def __init__(self, world, codec, run):
        size = run["image_size"]
        imgs, scenes = world.batch(run["val_seed"], 0, run["val_count"], "train", out_size=size)
        himgs, hscenes = world.batch(run["val_seed"], 0, run["heldout_val_count"], "heldout",
                                     out_size=size)
        self.parts = {"val": (pixel_values(imgs), scenes),
                      "heldout": (pixel_values(himgs), hscenes)}
        self.codec = codec
        self.max_length = run["max_length"]

    def evaluate(self, model):
        """Greedy-decoding exact match, overall and by number of objects."""
        out = {}
        model.eval()
        for name, (px, scenes) in self.parts.items():
            if not scenes:
                continue
            texts = greedy_captions(model, px, self.codec.eos, self.max_length, self.codec)
            hits = [t == s["caption"] for t, s in zip(texts, scenes)]
            out[f"{name}_exact"] = float(np.mean(hits))
            if name == "val":
                for n in (1, 2, 3):
                    sel = [h for h, s in zip(hits, scenes) if len(s["objects"]) == n]
                    out[f"val_exact_{n}obj"] = float(np.mean(sel)) if sel else None
                out["val_errors"] = [[s["caption"], t] for t, s, h in
                                     zip(texts, scenes, hits) if not h][:8]
        model.train()
        return out


def greedy_captions(model, px, eos, max_length, codec, chunk=100):
    texts = []
    with torch.no_grad():
        for start in range(0, px.shape[0], chunk):
            batch = px[start:start + chunk]
            cache = model.new_cache(model.encode(batch))
            n = batch.shape[0]
            tokens = torch.full((n, 1), eos, dtype=torch.long)
            done = torch.zeros(n, dtype=torch.bool)
            generated = []
            for _ in range(max_length - 1):
                nxt = model.decode(tokens, cache)[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                generated.append(nxt)
                done |= nxt == eos
                tokens = nxt[:, None]
                if bool(done.all()):
                    break
            ids = torch.stack(generated, 1).tolist()
            for row in ids:
                row = row[:row.index(eos)] if eos in row else row
                texts.append(codec.decode(row))
    return texts


# ------------------------------------------------------------------------------------------
# Schedule, checkpoints, export
# ------------------------------------------------------------------------------------------


def progress(run, state):
    if run["steps"] is not None:
        return state["step"] / run["steps"]
    return state["clock"] / (run["minutes"] * 60.0)


def learning_rate(run, p):
    warm = run["warmup"]
    if p < warm:
        return run["lr"] * max(p, 1e-3) / warm
    q = min(1.0, (p - warm) / max(1e-9, 1.0 - warm))
    floor = run["lr"] * run["min_lr_ratio"]
    return floor + (run["lr"] - floor) * 0.5 * (1.0 + math.cos(math.pi * q))


def save_checkpoint(ckpt_dir, model, labeller, optimizer, run, state):
    path = os.path.join(ckpt_dir, CHECKPOINT)
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "labeller": labeller.state_dict(),
                "optimizer": optimizer.state_dict(),
                "run": run, "state": state, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def export(model, codec, run, out_dir):
    proc = ProcessorConfig(height=run["image_size"], width=run["image_size"], resample=2,
                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    generation = {
        "bos_token_id": codec.eos, "decoder_start_token_id": codec.eos,
        "eos_token_id": codec.eos, "pad_token_id": codec.eos,
        "max_length": run["max_length"], "num_beams": 1, "do_sample": False,
    }
    model.save_pretrained(out_dir, dtype="f32", tokenizer=codec.tok, processor=proc,
                          generation=generation)


def append_log(ckpt_dir, record):
    with open(os.path.join(ckpt_dir, "log.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if "val_exact" in record:
        path = os.path.join(ckpt_dir, "curve.tsv")
        new = not os.path.exists(path)
        with open(path, "a", encoding="utf-8") as f:
            if new:
                f.write("samples\tminutes\tloss\tval_exact\tval_1obj\tval_2obj\tval_3obj\t"
                        "heldout_exact\n")
            f.write("\t".join(str(record.get(k)) for k in (
                "samples", "minutes", "loss", "val_exact", "val_exact_1obj", "val_exact_2obj",
                "val_exact_3obj", "heldout_exact")) + "\n")


# ------------------------------------------------------------------------------------------
# Main loop
# ------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    codec = CaptionCodec()
    ckpt_path = os.path.join(args.ckpt_dir, CHECKPOINT)

    saved = torch.load(ckpt_path) if os.path.exists(ckpt_path) else None
    if saved is not None:
        run, state = saved["run"], saved["state"]
        for k in RUN_KEYS:   # a setting added after the checkpoint was written: its default
            run.setdefault(k, ap_defaults(k))
        differing = [k for k in RUN_KEYS if getattr(args, k) != run[k] and
                     not (args.export_only and k in ("minutes", "steps"))]
        if differing:
            print(f"resuming {ckpt_path}: its settings win over the command line for "
                  f"{', '.join(differing)}", flush=True)
    elif args.export_only:
        sys.exit(f"--export-only: no checkpoint at {ckpt_path}")
    else:
        run = {k: getattr(args, k) for k in RUN_KEYS}
        state = {"step": 0, "samples": 0, "clock": 0.0, "loss_sum": 0.0, "loss_count": 0}

    torch.manual_seed(run["seed"])
    model = VisionEncoderDecoder(model_config(run, codec.vocab_size, codec.eos))
    init_weights(model, run)
    world = World(size=run["render_size"])
    labeller = PatchLabeller(run["dim"], len(world.classes))
    torch.nn.init.zeros_(labeller.classify.weight)
    torch.nn.init.zeros_(labeller.classify.bias)
    groups = param_groups(model, run["weight_decay"])
    if run["aux_weight"]:
        groups[0]["params"].append(labeller.classify.weight)
        groups[1]["params"].append(labeller.classify.bias)
    optimizer = torch.optim.AdamW(groups, lr=run["lr"], betas=(0.9, run["beta2"]), eps=1e-8)
    if saved is not None:
        model.load_state_dict(saved["model"])
        if "labeller" in saved:
            labeller.load_state_dict(saved["labeller"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])

    if args.export_only:
        export(model.eval(), codec, run, args.export)
        print(f"exported {ckpt_path} ({state['samples']} samples) to {args.export}")
        return 0

    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, {(run['image_size'] // run['patch']) ** 2 + 1}"
          f" memory tokens, vocab {codec.vocab_size}; {state['samples']} samples seen",
          flush=True)
    validation = None if args.no_eval else ValidationSet(world, codec, run)

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    model.train()
    t_last = time.time()
    last_ckpt = last_eval = last_log = state["clock"]
    window = {"samples": 0, "seconds": 0.0, "data_seconds": 0.0}
    while progress(run, state) < 1.0 and stop["signal"] is None:
        lr = learning_rate(run, progress(run, state))
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.time()
        images, scenes = world.batch(run["seed"], state["samples"], run["batch"], "train",
                                     out_size=run["image_size"])
        inputs, labels = teacher_batch(codec, [s["caption"] for s in scenes])
        px = pixel_values(images)
        if run["aux_weight"]:
            targets = patch_labels(scenes, run, len(world.classes))
        t1 = time.time()
        memory = model.encode(px)
        logits = model.decode(inputs, model.new_cache(memory))
        caption_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=-100, label_smoothing=run["label_smoothing"])
        loss = caption_loss
        if run["aux_weight"]:
            patch_logits = labeller(memory)
            aux_loss = F.cross_entropy(patch_logits.reshape(-1, patch_logits.shape[-1]),
                                       targets.reshape(-1))
            loss = loss + run["aux_weight"] * aux_loss
            state["aux_sum"] = state.get("aux_sum", 0.0) + float(aux_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), run["grad_clip"])
        optimizer.step()
        state["step"] += 1
        state["samples"] += run["batch"]
        state["loss_sum"] += float(caption_loss)
        state["loss_count"] += 1
        now = time.time()
        state["clock"] += now - t_last
        window["samples"] += run["batch"]
        window["seconds"] += now - t0
        window["data_seconds"] += t1 - t0
        t_last = now

        finished = progress(run, state) >= 1.0
        record = None
        if state["clock"] - last_log >= args.log_seconds or finished:
            record = {"step": state["step"], "samples": state["samples"],
                      "minutes": round(state["clock"] / 60, 2),
                      "loss": round(state["loss_sum"] / max(1, state["loss_count"]), 4),
                      "aux_loss": round(state.get("aux_sum", 0.0) / max(1, state["loss_count"]), 4),
                      "lr": lr, "samples_per_s": round(window["samples"] / window["seconds"], 1),
                      "data_share": round(window["data_seconds"] / window["seconds"], 3)}
            state["loss_sum"], state["loss_count"], state["aux_sum"] = 0.0, 0, 0.0
            window = {"samples": 0, "seconds": 0.0, "data_seconds": 0.0}
            last_log = state["clock"]
        if validation is not None and (state["clock"] - last_eval >= args.eval_minutes * 60
                                       or finished):
            record = record or {"step": state["step"], "samples": state["samples"],
                                "minutes": round(state["clock"] / 60, 2)}
            record.update(validation.evaluate(model))
            last_eval = state["clock"]
        if record is not None:
            append_log(args.ckpt_dir, record)
            print(json.dumps({k: v for k, v in record.items() if k != "val_errors"}), flush=True)
        if state["clock"] - last_ckpt >= args.ckpt_minutes * 60 or finished:
            save_checkpoint(args.ckpt_dir, model, labeller, optimizer, run, state)
            last_ckpt = state["clock"]
        # evaluation and checkpoint time belong to the run's clock too
        now = time.time()
        state["clock"] += now - t_last
        t_last = now

    save_checkpoint(args.ckpt_dir, model, labeller, optimizer, run, state)
    if stop["signal"] is not None:
        print(f"stopped by signal {stop['signal']} at {state['samples']} samples; "
              f"checkpoint saved, run the same command to resume", flush=True)
        return 0
    if args.export:
        export(model.eval(), codec, run, args.export)
        print(f"exported to {args.export}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
