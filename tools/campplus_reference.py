#!/usr/bin/env python3
"""Reference outputs of 3D-Speaker's CAM++ (zh_en common advanced) with its real weights.

Builds ``speakerlab.models.campplus.DTDNN.CAMPPlus(feat_dim=80, embedding_size=192)`` — the
``CAMPPLUS_COMMON`` arguments that 3D-Speaker's ``speakerlab/bin/infer_sv.py`` uses for
``iic/speech_campplus_sv_zh_en_16k-common_advanced`` — from the installed ``speakerlab``
(PyPI ``speakerlab==0.0.6``, whose CAM++ and FBank code is 3D-Speaker's; see
tools/README-campplus.md), loads the converted weights (``models/campplus-zh-en/
model.safetensors``, or the original ``campplus_cn_en_common.pt``) with a strict
``load_state_dict``, and records, for librispeech-mini files, what ``infer_sv.py`` computes:
``speakerlab.process.processor.FBank(80, sample_rate=16000, mean_nor=True)`` on the waveform
as ``torchaudio.load`` gives it (float, int16 / 32768: no 32768 scaling), i.e.
``kaldi.fbank(wav, num_mel_bins=80, sample_frequency=16000, dither=0)`` then
``feat - feat.mean(0, keepdim=True)``, and ``embedding_model(feat.unsqueeze(0))``.

Outputs in ``--out``: ``reference.safetensors`` (per file ``<i>``: ``fbank.<i>``, the Kaldi
fbank before mean subtraction, frames x 80 float32; ``fbank64.<i>``, the same torchaudio code
evaluated in float64; ``features.<i>``, after mean subtraction, float32 — what the network
sees; ``embedding.<i>``, 192 float32, the model output for the whole file in one forward pass,
not normalised) and ``reference.json`` (the files relative to the data folder, samples,
frames, weights and their SHA-256, front-end options, waveform scale, versions, the highest
cosine between different files' embeddings). Everything is computed at one PyTorch thread so
that the bytes do not depend on the machine's core count. ``--bench`` also measures the
reference throughput at one thread.

Run from the repository root with the venv, e.g.
    .venv/bin/python tools/campplus_reference.py --files 3 --max-seconds 4 --no-fbank64 \
        --out tests/fixtures/campplus
    .venv/bin/python tools/campplus_reference.py --all --out /tmp/campplus-full --bench
"""

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_common import DEFAULT_DATA, max_cosine_between, pick_files  # noqa: E402

from speakerlab.models.campplus.DTDNN import CAMPPlus  # noqa: E402
from speakerlab.process.processor import FBank  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = REPO_ROOT / "models" / "campplus-zh-en" / "model.safetensors"
# infer_sv.py: CAMPPLUS_COMMON, used for iic/speech_campplus_sv_zh_en_16k-common_advanced.
MODEL_ARGS = {"feat_dim": 80, "embedding_size": 192}
SAMPLE_RATE = 16000
# What FBank(80, sample_rate=16000, mean_nor=True) passes to torchaudio.compliance.kaldi.fbank
# (num_mel_bins, sample_frequency, dither) and torchaudio's defaults for the rest.
FBANK_OPTIONS = {
    "num_mel_bins": 80, "sample_frequency": 16000.0, "dither": 0.0, "frame_length_ms": 25.0,
    "frame_shift_ms": 10.0, "window_type": "povey", "preemphasis_coefficient": 0.97,
    "remove_dc_offset": True, "round_to_power_of_two": True, "snip_edges": True,
    "low_freq": 20.0, "high_freq": 0.0, "use_power": True, "use_log_fbank": True,
    "use_energy": False, "raw_energy": True, "log_floor": "float32 epsilon 1.1920929e-07",
}
CMN = "feat - feat.mean(0, keepdim=True) (mean of each band over the utterance; no variance)"
WAVEFORM_SCALE = 1.0  # float samples int16 / 32768 in [-1, 1), as torchaudio.load gives them


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--files", type=int, default=3,
                       help="test-other files, the first of each speaker in turn (default 3)")
    which.add_argument("--all", action="store_true",
                       help="every librispeech-mini file (**/*.flac, sorted by path)")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="keep only the first seconds of each file (0: whole file)")
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("VOCALGUARD_LIBRISPEECH_MINI", DEFAULT_DATA)))
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                    help="model.safetensors (converted) or campplus_cn_en_common.pt")
    ap.add_argument("--no-fbank64", action="store_true",
                    help="leave out fbank64.<i> (keeps the CI fixture under 1 MB)")
    ap.add_argument("--bench", action="store_true",
                    help="reference throughput at one thread (fbank + CMN + embedding)")
    ap.add_argument("--bench-repeats", type=int, default=3)
    ap.add_argument("--rust-cmd", default=None,
                    help="with --bench: shell command printing a JSON line with x_realtime; "
                         "run after the reference, ratio printed")
    return ap.parse_args()


def all_files(data):
    files = sorted(data.glob("**/*.flac"))
    if not files:
        raise SystemExit(f"no .flac files under {data} (set $VOCALGUARD_LIBRISPEECH_MINI)")
    return files


def read_waveform(path, max_samples=0):
    """16 kHz mono 16-bit audio as torchaudio.load (normalize=True) gives it to infer_sv.py:
    float32 samples int16 / 32768, shape (1, n); cut to `max_samples` when given."""
    info = soundfile.info(str(path))
    if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.subtype != "PCM_16":
        sys.exit(f"{path}: {info.samplerate} Hz, {info.channels} channels, {info.subtype}; "
                 "16 kHz mono PCM_16 expected")
    samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    samples = samples[:, 0]
    if max_samples:
        samples = samples[:max_samples]
    return torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(weights):
    """CAMPPlus with the CAMPPLUS_COMMON arguments, weights loaded strictly, eval mode."""
    model = CAMPPlus(**MODEL_ARGS)
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(weights))
        # The converter drops the BatchNorm `num_batches_tracked` counters (never read in
        # eval mode); give them back so that the load below can stay strict.
        for name, buf in model.state_dict().items():
            if name.endswith(".num_batches_tracked"):
                state.setdefault(name, torch.zeros_like(buf))
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_loop(impl, inputs, embed, repeats):
    """One-thread throughput of `embed(wav)` over `inputs` (decoded beforehand): one warm-up
    call, then the best of `repeats` passes. Returns the JSON-able result."""
    torch.set_num_threads(1)
    audio_seconds = sum(x.shape[1] for x in inputs) / SAMPLE_RATE
    embed(inputs[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            embed(x)
        best = min(best, time.perf_counter() - start)
    return {"impl": impl, "threads": 1, "files": len(inputs),
            "audio_seconds": round(audio_seconds, 4), "wall_seconds": round(best, 4),
            "x_realtime": round(audio_seconds / best, 3), "repeats": repeats,
            "peak_rss_mib": round(peak_rss_mib(), 1)}


def run_rust_cmd(cmd, data, reference):
    """Runs CMD from the repository root (librispeech-mini in $VOCALGUARD_LIBRISPEECH_MINI and
    $LIBRISPEECH_MINI), takes its last stdout line that is a JSON object, prints it and the
    ratio of its x_realtime to the reference's."""
    env = dict(os.environ, VOCALGUARD_LIBRISPEECH_MINI=str(data), LIBRISPEECH_MINI=str(data))
    print(f"rust: running {cmd!r} in {REPO_ROOT}", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, shell=True, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        raise SystemExit(f"--rust-cmd exited with status {p.returncode}")
    for line in reversed(p.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                rust = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rust, dict):
                break
    else:
        sys.stdout.write(p.stdout)
        raise SystemExit("--rust-cmd printed no JSON object")
    print(json.dumps(rust), flush=True)
    if rust.get("files") not in (None, reference["files"]):
        print(f"warning: the Rust run covered {rust.get('files')} files, the reference "
              f"{reference['files']}", file=sys.stderr)
    if isinstance(rust.get("x_realtime"), (int, float)):
        print(json.dumps({"ratio": round(rust["x_realtime"] / reference["x_realtime"], 3),
                          "rust": rust.get("impl"), "reference": reference["impl"]}),
              flush=True)
    return rust


def main():
    args = parse_args()
    torch.set_num_threads(1)  # the recorded bytes must not depend on the core count
    torch.set_num_interop_threads(1)
    data = args.data.resolve()
    files = all_files(data) if args.all else pick_files(data, args.files)
    max_samples = int(round(args.max_seconds * SAMPLE_RATE))
    model = load_model(args.weights)
    fbank_raw = FBank(80, sample_rate=SAMPLE_RATE, mean_nor=False)
    fbank_cmn = FBank(80, sample_rate=SAMPLE_RATE, mean_nor=True)

    tensors, entries = {}, []
    for i, path in enumerate(files):
        wav = read_waveform(path, max_samples)
        with torch.no_grad():
            fbank = fbank_raw(wav)
            feats = fbank_cmn(wav)
            embedding = model(feats.unsqueeze(0))[0]
        tensors[f"fbank.{i}"] = fbank.numpy().astype(np.float32)
        tensors[f"features.{i}"] = feats.numpy().astype(np.float32)
        tensors[f"embedding.{i}"] = embedding.numpy().astype(np.float32)
        if not args.no_fbank64:
            # The same torchaudio code in float64 (mel filters included), to tell the float32
            # rounding of the reference from differences of method.
            default_dtype = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64)
            try:
                tensors[f"fbank64.{i}"] = fbank_raw(wav.double()).numpy().astype(np.float64)
            finally:
                torch.set_default_dtype(default_dtype)
        entries.append({"file": str(path.relative_to(data)), "num_samples": wav.shape[1],
                        "frames": feats.shape[0]})
        if args.all and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(files)} files", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "reference.safetensors"))

    embeddings = np.stack([tensors[f"embedding.{i}"] for i in range(len(files))])
    speakers = [Path(e["file"]).name.split("-")[0] for e in entries]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cross = unit @ unit.T
    other = np.array([[a != b for b in speakers] for a in speakers])
    try:
        weights_label = str(args.weights.resolve().relative_to(REPO_ROOT))
    except ValueError:
        weights_label = str(args.weights)
    meta = {
        "model": "CAMPPlus (speakerlab.models.campplus.DTDNN)",
        "model_args": MODEL_ARGS,
        "weights": weights_label,
        "weights_sha256": sha256_file(args.weights),
        "waveform_scale": WAVEFORM_SCALE,
        "waveform": "float32 samples int16/32768 in [-1, 1) (torchaudio.load normalize=True); "
                    "not scaled by 32768",
        "fbank": FBANK_OPTIONS,
        "cmn": CMN,
        "max_seconds": args.max_seconds,
        "selection": "all **/*.flac sorted by path" if args.all
        else "test-other, first file of each speaker in turn",
        "tensors": ["fbank", "features", "embedding"] + ([] if args.no_fbank64 else ["fbank64"]),
        "torch_threads": 1,
        "files": entries,
        "max_cosine_between_files": max_cosine_between(embeddings),
        "max_cosine_between_speakers": float(cross[other].max()) if other.any() else None,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "torchaudio": metadata.version("torchaudio"),
                     "speakerlab": metadata.version("speakerlab"),
                     "soundfile": metadata.version("soundfile"),
                     "safetensors": metadata.version("safetensors"),
                     "numpy": np.__version__},
    }
    (args.out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}: {len(files)} files, max cosine between files "
          f"{meta['max_cosine_between_files']}, between speakers "
          f"{meta['max_cosine_between_speakers']}", flush=True)

    if args.bench:
        inputs = [read_waveform(path, max_samples) for path in files]

        def embed(wav):
            with torch.inference_mode():
                return model(fbank_cmn(wav).unsqueeze(0))

        result = bench_loop("campplus-torch", inputs, embed, args.bench_repeats)
        result["torch"] = torch.__version__
        print(json.dumps(result), flush=True)
        if args.rust_cmd:
            run_rust_cmd(args.rust_cmd, data, result)


if __name__ == "__main__":
    main()
