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

import json
import sys
from importlib.metadata import version

import numpy as np
import soundfile
import speechbrain
import torch
from safetensors.numpy import save_file
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import torch_recovery, torch_save

from reference_common import arguments, bench, max_cosine_between, pick_files, randomise_batchnorm

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
    args = arguments(__doc__.split("\n\n")[0],
                     "channels [32, 32, 32, 32, 96], attention and SE 16, 96-dim embeddings "
                     "(the committed CI fixture)")

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    model_args = REDUCED_MODEL_ARGS if args.reduced else PUBLISHED_MODEL_ARGS
    model = ECAPA_TDNN(**model_args)
    calibration = calibration_batch(args.data, 16, 3.0)
    randomise_batchnorm(model, lambda: model(calibration), generator)
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
    meta = {
        "model": "ECAPA_TDNN",
        "model_args": model_args,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": args.seed,
        "max_seconds": args.max_seconds,
        "files": entries,
        "max_cosine_between_files": max_cosine_between(embeddings),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "speechbrain": speechbrain.__version__, "soundfile": version("soundfile"),
                     "numpy": np.__version__},
    }
    (args.out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}: {len(files)} files, max cosine between files "
          f"{meta['max_cosine_between_files']}")

    if args.bench:
        bench("speechbrain ECAPA-TDNN (PyTorch)",
              [read_wav(path, max_samples) for path in files], reference, args.bench_repeats)

if __name__ == "__main__":
    main()
