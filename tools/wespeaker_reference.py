#!/usr/bin/env python3
"""Reference outputs of WeSpeaker's ResNet34 (``wespeaker-voxceleb-resnet34-LM``) with random weights.

Builds ResNet34 from the installed ``wespeaker`` package (``wespeaker-unofficial`` on PyPI)
with the published model arguments and a fixed seed, randomises every BatchNorm (running mean
and variance, scale and shift), and saves the state dict the way WeSpeaker publishes it: a
``torch.save``'d plain state dict named ``avg_model.pt`` beside a ``config.yaml``. It then loads
that directory with WeSpeaker's own ``load_model_pt``/``Speaker`` (the path users of the
published model take) and records, for librispeech-mini files, the features WeSpeaker feeds the
network (``Speaker.compute_features``: Kaldi fbank + cepstral mean normalisation) and the
embeddings (``Speaker.extract_embedding_from_pcm``).

Outputs in ``--out``: ``avg_model.pt``, ``config.yaml``, ``reference.safetensors``
(per file ``<i>``: ``fbank.<i>``, the Kaldi fbank before CMN, and ``features.<i>``, after it,
frames x 80 float32 as WeSpeaker computes them; ``fbank64.<i>``, the same torchaudio code in
float64; ``embedding.<i>``, embed_dim float32) and ``reference.json``
(the files, their sample counts, versions, seed, shape). ``--bench`` also measures the reference
throughput at one thread.

Run from the repository root with the venv, e.g.
    .venv/bin/python tools/wespeaker_reference.py --reduced --files 3 --max-seconds 4 \
        --out tests/fixtures/resnet34
    .venv/bin/python tools/wespeaker_reference.py --files 10 --out /tmp/resnet34-full --bench
"""

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import soundfile
import torch
import yaml
from safetensors.numpy import save_file

# The installed s3prl (a dependency of wespeaker's self-supervised front ends) no longer
# imports under torchaudio >= 2.9. WeSpeaker imports it at module load only to define
# S3prlFrontend, which fbank models never use; an empty stand-in lets the rest import.
_s3prl_nn = types.ModuleType("s3prl.nn")
_s3prl_nn.Featurizer = _s3prl_nn.S3PRLUpstream = None
_s3prl = types.ModuleType("s3prl")
_s3prl.nn = _s3prl_nn
sys.modules.setdefault("s3prl", _s3prl)
sys.modules.setdefault("s3prl.nn", _s3prl_nn)

import wespeaker  # noqa: E402
from wespeaker.cli.speaker import Speaker  # noqa: E402
from wespeaker.models import resnet  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/librispeech-mini"

# The published model's arguments (config.yaml of wespeaker-voxceleb-resnet34-LM).
PUBLISHED_MODEL_ARGS = {
    "feat_dim": 80,
    "embed_dim": 256,
    "pooling_func": "TSTP",
    "two_emb_layer": False,
}
# VoxCeleb2 dev speakers: the classes of the training head WeSpeaker saves with the model.
PUBLISHED_CLASSES = 5994


def reduced_factory(m_channels):
    """ResNet34's block layout at a smaller width (same module tree, so the same tensor names)."""

    def build(feat_dim, embed_dim, pooling_func="TSTP", two_emb_layer=False):
        return resnet.ResNet(
            resnet.BasicBlock,
            [3, 4, 6, 3],
            m_channels=m_channels,
            feat_dim=feat_dim,
            embed_dim=embed_dim,
            pooling_func=pooling_func,
            two_emb_layer=two_emb_layer,
        )

    return build


def randomise_batchnorm(model, generator):
    """Calibrates BatchNorm running statistics on noise, then perturbs them and the affine
    parameters, so that eval-mode BatchNorm is exercised with values far from its init."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(4, 200, model.feat_dim, generator=generator))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                spread = module.running_var.sqrt()
                module.running_mean += 0.2 * spread * torch.randn(n, generator=generator)
                module.running_var *= 0.5 + 1.5 * torch.rand(n, generator=generator)
                if module.affine:
                    module.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=generator))
                    module.bias.copy_(0.2 * torch.randn(n, generator=generator))
            module.momentum = 0.1
    model.eval()


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


def read_pcm(path, max_samples):
    """16-bit PCM as WeSpeaker's `torchaudio.load(normalize=False)` gives it: integer values
    in [-32768, 32767], shape (1, n), float32; cut to `max_samples` when given."""
    samples, rate = soundfile.read(path, dtype="int16", always_2d=True)
    if rate != 16000 or samples.shape[1] != 1:
        sys.exit(f"{path}: {rate} Hz, {samples.shape[1]} channels; 16 kHz mono expected")
    samples = samples[:, 0]
    if max_samples:
        samples = samples[:max_samples]
    return torch.from_numpy(samples.astype(np.float32)).unsqueeze(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--reduced", action="store_true",
                        help="m_channels 4 and embed_dim 32 (the committed CI fixture)")
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
    model_args = dict(PUBLISHED_MODEL_ARGS)
    classes = PUBLISHED_CLASSES
    if args.reduced:
        m_channels, model_args["embed_dim"], classes = 4, 32, 8
        model_name = "ResNet34Reduced"
        # Registered on the module so that WeSpeaker's `get_speaker_model` finds it by name.
        resnet.ResNet34Reduced = reduced_factory(m_channels)
        model = resnet.ResNet34Reduced(**model_args)
    else:
        m_channels, model_name = 32, "ResNet34"
        model = resnet.ResNet34(**model_args)
    randomise_batchnorm(model, generator)

    # WeSpeaker trains with the margin head as a `projection` submodule and saves the whole
    # model's state dict; the published avg_model.pt carries it beside the encoder.
    state = model.state_dict()
    state["projection.weight"] = torch.randn(classes, model_args["embed_dim"], generator=generator)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out / "avg_model.pt")
    config = {"model": model_name, "model_args": model_args,
              "dataset_args": {"fbank_args": {"num_mel_bins": 80, "frame_length": 25,
                                              "frame_shift": 10, "dither": 1.0}}}
    (args.out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    speaker = Speaker(str(args.out))  # load_model_pt + load_checkpoint, as for the published model
    speaker.set_device("cpu")
    max_samples = int(round(args.max_seconds * 16000))
    files = pick_files(args.data, args.files)
    tensors, entries = {}, []
    for i, path in enumerate(files):
        pcm = read_pcm(path, max_samples)
        fbank = speaker.compute_features(pcm, sample_rate=16000, cmn=False)[0]
        feats = speaker.compute_features(pcm, sample_rate=16000, cmn=True)[0]
        embedding = speaker.extract_embedding_from_pcm(pcm, 16000)
        # The same torchaudio code evaluated in float64 (mel filters included), to tell the
        # float32 rounding of the reference from differences of method.
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            fbank64 = speaker.compute_features(pcm.double(), sample_rate=16000, cmn=False)[0]
        finally:
            torch.set_default_dtype(default_dtype)
        tensors[f"fbank.{i}"] = fbank.numpy().astype(np.float32)
        tensors[f"fbank64.{i}"] = fbank64.numpy().astype(np.float64)
        tensors[f"features.{i}"] = feats.numpy().astype(np.float32)
        tensors[f"embedding.{i}"] = embedding.numpy().astype(np.float32)
        entries.append({"file": str(path.relative_to(args.data)), "num_samples": pcm.shape[1],
                        "frames": feats.shape[0]})
    save_file(tensors, str(args.out / "reference.safetensors"))
    embeddings = np.stack([tensors[f"embedding.{i}"] for i in range(len(files))])
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cross = unit @ unit.T
    off_diagonal = cross[~np.eye(len(files), dtype=bool)]
    meta = {
        "model": model_name,
        "m_channels": m_channels,
        "model_args": model_args,
        "projection_classes": classes,
        "seed": args.seed,
        "window_type": speaker.window_type,
        "max_seconds": args.max_seconds,
        "files": entries,
        "max_cosine_between_files": float(off_diagonal.max()) if off_diagonal.size else None,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "torchaudio": __import__("torchaudio").__version__,
                     "wespeaker-unofficial": getattr(wespeaker, "__version__", None)
                     or __import__("importlib.metadata").metadata.version("wespeaker-unofficial"),
                     "numpy": np.__version__},
    }
    (args.out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}: {len(files)} files, max cosine between files "
          f"{meta['max_cosine_between_files']}")

    if args.bench:
        torch.set_num_threads(1)
        pcms = [read_pcm(path, max_samples) for path in files]
        audio_seconds = sum(p.shape[1] for p in pcms) / 16000
        best = float("inf")
        for _ in range(args.bench_repeats):
            start = time.perf_counter()
            for pcm in pcms:
                speaker.extract_embedding_from_pcm(pcm, 16000)
            best = min(best, time.perf_counter() - start)
        print(json.dumps({"reference": "wespeaker ResNet34 (PyTorch)", "threads": 1,
                          "files": len(pcms), "audio_seconds": audio_seconds,
                          "best_wall_seconds": best,
                          "audio_seconds_per_wall_second": audio_seconds / best}))


if __name__ == "__main__":
    main()
