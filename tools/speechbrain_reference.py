#!/usr/bin/env python3
"""Reference outputs of SpeechBrain's ECAPA-TDNN (``speechbrain/spkrec-ecapa-voxceleb``) with random weights.

Builds ``ECAPA_TDNN`` from the installed ``speechbrain`` package with the published
hyperparameters (``hyperparams.yaml``: input_size 80, channels [1024, 1024, 1024, 1024, 3072],
kernel_sizes [5, 3, 3, 3, 1], dilations [1, 2, 3, 4, 1], attention_channels 128,
lin_neurons 192; res2net_scale 8, se_channels 128, global_context True by default) and a fixed
seed, sets every BatchNorm's running statistics from real speech (16 train-clean-100 files,
first 3 s) and then perturbs them and the BatchNorm scales and shifts, and saves the state
dict the way SpeechBrain's checkpointer writes ``embedding_model.ckpt``
(``speechbrain.utils.checkpoints.torch_save``: ``torch.save`` of the plain state dict). A fresh
model then loads that file with SpeechBrain's own strict loader (``torch_recovery``), and for
librispeech-mini files the script records what ``EncoderClassifier.encode_batch`` computes:
the features (``Fbank(n_mels=80)`` then ``InputNormalization(norm_type="sentence",
std_norm=False)``) and the embeddings (``embedding_model(feats, wav_lens)``, before any
normalisation).

Outputs in ``--out``: ``embedding_model.ckpt``, ``reference.safetensors`` (``features.<i>``:
frames x 80, ``embedding.<i>``: lin_neurons, float32) and ``reference.json`` (the files, their
sample counts, versions, seed, shape). ``--bench`` also measures the reference throughput at
one thread.

Run from the repository root with the venv, e.g.
    .venv/bin/python tools/speechbrain_reference.py --reduced --files 3 --max-seconds 6 \
        --out tests/fixtures/ecapa
    .venv/bin/python tools/speechbrain_reference.py --files 10 --out /tmp/ecapa-full --bench
"""

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import soundfile
import speechbrain
import torch
from safetensors.numpy import save_file
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import torch_recovery, torch_save

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/librispeech-mini"

# `embedding_model` of the published hyperparams.yaml, with the constructor defaults it
# relies on spelled out.
PUBLISHED_MODEL_ARGS = {
    "input_size": 80,
    "channels": [1024, 1024, 1024, 1024, 3072],
    "kernel_sizes": [5, 3, 3, 3, 1],
    "dilations": [1, 2, 3, 4, 1],
    "attention_channels": 128,
    "res2net_scale": 8,
    "se_channels": 128,
    "lin_neurons": 192,
    "global_context": True,
}
# The committed CI fixture: the same module tree (so the same tensor names) at a small width.
REDUCED_MODEL_ARGS = dict(
    PUBLISHED_MODEL_ARGS,
    channels=[32, 32, 32, 32, 96],
    attention_channels=16,
    se_channels=16,
    lin_neurons=96,
)


def randomise_batchnorm(model, calibration, generator):
    """Calibrates BatchNorm running statistics on real features (so that eval-mode BatchNorm
    normalises speech, and embeddings differ between speakers as a trained model's do), then
    perturbs them and the affine parameters away from their init."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    with torch.no_grad():
        model(calibration)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                spread = module.running_var.sqrt()
                module.running_mean += 0.2 * spread * torch.randn(n, generator=generator)
                module.running_var *= 0.5 + 1.5 * torch.rand(n, generator=generator)
                module.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
            module.momentum = 0.1
    model.eval()


def calibration_batch(data, count, seconds):
    """Features of the first `count` train-clean-100 files (other speakers than the test-other
    files the outputs are recorded for), each cut to `seconds`, as one batch."""
    files = sorted((data / "train-clean-100").glob("*.flac"))[:count]
    max_samples = int(seconds * 16000)
    wavs = torch.cat([read_wav(f, max_samples) for f in files])
    if wavs.shape[1] < max_samples:
        sys.exit(f"calibration files shorter than {seconds} s")
    feats = Fbank(n_mels=80)(wavs)
    return InputNormalization(norm_type="sentence", std_norm=False)(feats, torch.ones(count))


def pick_files(data, count):
    """`count` test-other files, taking the first file of each speaker in turn (speakers and
    files in sorted order), so that a few files already span several speakers."""
    speakers = [sorted(d.glob("*.flac")) for d in sorted((data / "test-other").iterdir())
                if d.is_dir()]
    files = [f for rank in range(max(map(len, speakers), default=0))
             for files in speakers if rank < len(files) for f in [files[rank]]]
    if len(files) < count:
        sys.exit(f"{data}: only {len(files)} test-other files, {count} asked")
    return files[:count]


def read_wav(path, max_samples):
    """The waveform as SpeechBrain's `load_audio` gives it: float32 in [-1, 1], shape (1, n);
    cut to `max_samples` when given."""
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if rate != 16000 or samples.shape[1] != 1:
        sys.exit(f"{path}: {rate} Hz, {samples.shape[1]} channels; 16 kHz mono expected")
    samples = samples[:, 0]
    if max_samples:
        samples = samples[:max_samples]
    return torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0)


class Reference:
    """The three modules `EncoderClassifier.encode_batch` runs, in eval mode."""

    def __init__(self, model, n_mels):
        self.compute_features = Fbank(n_mels=n_mels).eval()
        self.mean_var_norm = InputNormalization(norm_type="sentence", std_norm=False).eval()
        self.embedding_model = model.eval()

    @torch.no_grad()
    def __call__(self, wavs):
        wav_lens = torch.ones(wavs.shape[0])
        feats = self.compute_features(wavs)
        feats = self.mean_var_norm(feats, wav_lens)
        return feats, self.embedding_model(feats, wav_lens)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--reduced", action="store_true",
                        help="channels [32, 32, 32, 32, 96], attention and SE 16, 96-dim "
                             "embeddings (the committed CI fixture)")
    parser.add_argument("--files", type=int, default=3, help="librispeech-mini files")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="keep only the first seconds of each file (0: whole file)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("VOCALGUARD_LIBRISPEECH_MINI", DEFAULT_DATA)))
    parser.add_argument("--bench", action="store_true",
                        help="reference throughput at one thread (features + embedding)")
    parser.add_argument("--bench-repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    model_args = REDUCED_MODEL_ARGS if args.reduced else PUBLISHED_MODEL_ARGS
    model = ECAPA_TDNN(**model_args)
    randomise_batchnorm(model, calibration_batch(args.data, 16, 3.0), generator)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "embedding_model.ckpt"
    torch_save(model, checkpoint)

    # Load the file back the way SpeechBrain's checkpointer recovers a module (strict).
    loaded = ECAPA_TDNN(**model_args)
    torch_recovery(loaded, checkpoint, end_of_epoch=False)
    reference = Reference(loaded, model_args["input_size"])

    max_samples = int(round(args.max_seconds * 16000))
    files = pick_files(args.data, args.files)
    tensors, entries = {}, []
    for i, path in enumerate(files):
        wav = read_wav(path, max_samples)
        feats, embedding = reference(wav)
        tensors[f"features.{i}"] = feats[0].numpy().astype(np.float32)
        tensors[f"embedding.{i}"] = embedding[0, 0].numpy().astype(np.float32)
        entries.append({"file": str(path.relative_to(args.data)), "num_samples": wav.shape[1],
                        "frames": feats.shape[1]})
    save_file(tensors, str(args.out / "reference.safetensors"))
    embeddings = np.stack([tensors[f"embedding.{i}"] for i in range(len(files))])
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cross = unit @ unit.T
    off_diagonal = cross[~np.eye(len(files), dtype=bool)]
    meta = {
        "model": "ECAPA_TDNN",
        "model_args": model_args,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": args.seed,
        "max_seconds": args.max_seconds,
        "files": entries,
        "max_cosine_between_files": float(off_diagonal.max()) if off_diagonal.size else None,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "speechbrain": speechbrain.__version__, "soundfile": version("soundfile"),
                     "numpy": np.__version__},
    }
    (args.out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}: {len(files)} files, max cosine between files "
          f"{meta['max_cosine_between_files']}")

    if args.bench:
        torch.set_num_threads(1)
        wavs = [read_wav(path, max_samples) for path in files]
        audio_seconds = sum(w.shape[1] for w in wavs) / 16000
        reference(wavs[0])  # warm-up
        best = float("inf")
        for _ in range(args.bench_repeats):
            start = time.perf_counter()
            for wav in wavs:
                reference(wav)
            best = min(best, time.perf_counter() - start)
        print(json.dumps({"reference": "speechbrain ECAPA-TDNN (PyTorch)", "threads": 1,
                          "files": len(wavs), "audio_seconds": audio_seconds,
                          "best_wall_seconds": best,
                          "audio_seconds_per_wall_second": audio_seconds / best}))


if __name__ == "__main__":
    main()
