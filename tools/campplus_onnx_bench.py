#!/usr/bin/env python3
"""CAM++ (zh_en common advanced) through onnxruntime: export, parity with PyTorch, one-thread speed.

Exports the model campplus_reference.py builds (speakerlab's CAMPPlus with the real converted
weights, strict load, eval mode) with ``torch.onnx.export`` (the TorchScript exporter,
``dynamo=False``, opset 17): input ``features`` [1, T, 80] float32, the mean-normalised fbank,
with T dynamic; output ``embedding`` [1, 192]. For the chosen librispeech-mini files it then
compares onnxruntime's embedding with PyTorch's on the same features (cosine, max abs
difference; printed as one JSON line), and times at one thread the whole path:
``FBank(80, mean_nor=True)`` (torchaudio's kaldi.fbank + mean subtraction, at
``torch.set_num_threads(1)``) and an onnxruntime CPU session with ``intra_op_num_threads=1``,
``inter_op_num_threads=1``, over the decoded files, best of R passes after a warm-up — the
JSON line shape of ``campplus_reference.py --bench``.

Run from the repository root with the venv (onnx must be installed for the export), e.g.
    .venv/bin/python tools/campplus_onnx_bench.py --all
    .venv/bin/python tools/campplus_onnx_bench.py --files 10 --rust-cmd "target/release/..."
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campplus_reference import (  # noqa: E402
    DEFAULT_WEIGHTS, SAMPLE_RATE, all_files, bench_loop, load_model, read_waveform,
    run_rust_cmd)
from reference_common import DEFAULT_DATA, pick_files  # noqa: E402

import onnxruntime as ort  # noqa: E402
from speakerlab.process.processor import FBank  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--files", type=int, default=10,
                       help="test-other files, the first of each speaker in turn (default 10)")
    which.add_argument("--all", action="store_true",
                       help="every librispeech-mini file (**/*.flac, sorted by path)")
    ap.add_argument("--max-seconds", type=float, default=0.0)
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("VOCALGUARD_LIBRISPEECH_MINI", DEFAULT_DATA)))
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--onnx", type=Path, default=Path("/tmp/campplus-zh-en.onnx"),
                    help="where the exported model is written (default %(default)s)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--bench-repeats", type=int, default=3)
    ap.add_argument("--rust-cmd", default=None,
                    help="shell command printing a JSON line with x_realtime; run after, "
                         "ratio to onnxruntime printed")
    return ap.parse_args()


def export(model, example, path, opset):
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (example,), str(path), input_names=["features"],
                          output_names=["embedding"], dynamic_axes={"features": {1: "frames"}},
                          opset_version=opset, dynamo=False)


def main():
    args = parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    data = args.data.resolve()
    files = all_files(data) if args.all else pick_files(data, args.files)
    max_samples = int(round(args.max_seconds * SAMPLE_RATE))
    model = load_model(args.weights)
    fbank = FBank(80, sample_rate=SAMPLE_RATE, mean_nor=True)
    inputs = [read_waveform(path, max_samples) for path in files]

    with torch.no_grad():
        export(model, fbank(inputs[0]).unsqueeze(0), args.onnx, args.opset)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])

    cosines, diffs = [], []
    for wav in inputs:
        with torch.no_grad():
            feats = fbank(wav).unsqueeze(0)
            ref = model(feats)[0].numpy()
        got = session.run(None, {"features": feats.numpy()})[0][0]
        cosines.append(float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got))))
        diffs.append(float(np.abs(ref - got).max()))
    print(json.dumps({"check": "onnxruntime vs torch", "onnx": str(args.onnx),
                      "onnx_bytes": args.onnx.stat().st_size, "opset": args.opset,
                      "files": len(inputs), "min_cosine": min(cosines),
                      "max_abs_diff": max(diffs)}), flush=True)

    def embed(wav):
        with torch.inference_mode():
            feats = fbank(wav).unsqueeze(0).numpy()
        return session.run(None, {"features": feats})[0]

    result = bench_loop("campplus-onnxruntime", inputs, embed, args.bench_repeats)
    result["onnxruntime"] = ort.__version__
    print(json.dumps(result), flush=True)
    if args.rust_cmd:
        run_rust_cmd(args.rust_cmd, data, result)


if __name__ == "__main__":
    main()
