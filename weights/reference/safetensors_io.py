"""Reader and writer for the safetensors format (spec §1), with no dependency beyond torch.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section. The JSON
maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
data section) plus an optional "__metadata__" object of string -> string.

The reader validates the file the way the reference implementation (huggingface/safetensors,
safetensors/src/tensor.rs) does before handing out any tensor: bounded header, known dtypes,
shapes that match the byte ranges, no overlap and no holes in the data section. Errors name the
file and the tensor at fault.

The writer reproduces what `safetensors.torch.save_file` produces: tensors sorted by name (the
reference sorts by dtype first, then name; see `_write_order`), packed back to back,
header padded with spaces to a multiple of 8 bytes.
"""

import json
import struct

import torch

# dtype name in the file -> (torch dtype, bytes per element)
DTYPES = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
}
_NAME_OF = {torch_dtype: name for name, (torch_dtype, _) in DTYPES.items()}

# The reference refuses headers above 100 MB (a defence against hostile length fields).
MAX_HEADER_BYTES = 100 * 1000 * 1000


class SafetensorsError(ValueError):
    """A malformed or unsupported safetensors file; the message names the file and tensor."""


def _fail(path, what):
    raise SafetensorsError(f"{path}: {what}")


def parse_header(blob, path="<bytes>"):
    """Validates the header of a whole file given as bytes.

    Returns (entries, metadata, data_start) where entries maps each name to
    (dtype_name, shape tuple, begin, end) with offsets relative to data_start.
    """
    if len(blob) < 8:
        _fail(path, f"file is {len(blob)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > MAX_HEADER_BYTES:
        _fail(path, f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if 8 + header_len > len(blob):
        _fail(path, f"header length {header_len} runs past the end of the {len(blob)}-byte file")
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"header is not valid UTF-8 JSON ({e})")
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")

    data_start = 8 + header_len
    data_size = len(blob) - data_start
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            _fail(path, "__metadata__ must be an object of string -> string")

    entries = {}
    for name, info in header.items():
        where = f"tensor {name}"
        if not isinstance(info, dict):
            _fail(path, f"{where}: entry is not an object")
        dtype = info.get("dtype")
        if dtype not in DTYPES:
            _fail(path, f"{where}: unsupported dtype {dtype!r} (supported: F32, F16, BF16)")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            _fail(path, f"{where}: shape {shape!r} is not a list of non-negative integers")
        offsets = info.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
            _fail(path, f"{where}: data_offsets {offsets!r} is not a pair of non-negative integers")
        begin, end = offsets
        if begin > end:
            _fail(path, f"{where}: data_offsets begin {begin} > end {end}")
        if end > data_size:
            _fail(path, f"{where}: data_offsets end {end} exceeds the data section ({data_size} bytes)")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * DTYPES[dtype][1]
        if nbytes >= 2 ** 64:
            _fail(path, f"{where}: shape {shape} overflows a 64-bit byte count")
        if nbytes != end - begin:
            _fail(path, f"{where}: shape {shape} x {dtype} needs {nbytes} bytes, "
                        f"data_offsets give {end - begin}")
        entries[name] = (dtype, tuple(shape), begin, end)

    # The reference requires the byte ranges, sorted, to tile the data section exactly.
    covered = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin < covered:
            _fail(path, f"tensor {name}: bytes [{begin}, {end}) overlap the previous tensor")
        if begin > covered:
            _fail(path, f"tensor {name}: hole in the data section before byte {begin}")
        covered = end
    if covered != data_size:
        _fail(path, f"data section has {data_size} bytes but tensors cover only {covered}")
    return entries, metadata, data_start


def load_bytes(blob, path="<bytes>"):
    """Parses a whole safetensors file given as bytes. Returns (tensors, metadata)."""
    entries, metadata, data_start = parse_header(blob, path)
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        torch_dtype = DTYPES[dtype][0]
        raw = bytearray(blob[data_start + begin:data_start + end])
        if len(raw) == 0:
            tensors[name] = torch.zeros(shape, dtype=torch_dtype)
        else:
            # The file is little-endian; so is every machine this runs on (checked below).
            tensors[name] = torch.frombuffer(raw, dtype=torch_dtype).reshape(shape).clone()
    return tensors, metadata


def load_file(path):
    """Reads path. Returns (dict name -> torch.Tensor in the stored dtype, metadata or None)."""
    with open(path, "rb") as f:
        blob = f.read()
    return load_bytes(blob, path)


# Position of each dtype in the reference's Dtype enum (F16 < BF16 < F32).
_ENUM_RANK = {"F16": 0, "BF16": 1, "F32": 2}


def _write_order(tensors):
    # huggingface/safetensors (prepare in tensor.rs) sorts by dtype, descending in its enum
    # order (which follows alignment), then by name: a single-dtype file is sorted by name.
    def key(name):
        dtype = tensors[name].dtype
        rank = _ENUM_RANK[_NAME_OF[dtype]] if dtype in _NAME_OF else -1
        return (-rank, name)
    return sorted(tensors, key=key)


def dump_bytes(tensors, metadata=None):
    """Serializes dict name -> tensor (F32/F16/BF16) to safetensors bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for name in _write_order(tensors):
        t = tensors[name]
        if t.dtype not in _NAME_OF:
            raise SafetensorsError(f"tensor {name}: dtype {t.dtype} cannot be stored "
                                   f"(supported: float32, float16, bfloat16)")
        t = t.detach().to("cpu").contiguous()
        # Viewing as uint8 gives the raw little-endian bytes, bfloat16 included.
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAME_OF[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_file(tensors, path, metadata=None):
    with open(path, "wb") as f:
        f.write(dump_bytes(tensors, metadata))


assert struct.pack("=I", 1) == struct.pack("<I", 1), "safetensors_io assumes a little-endian host"
