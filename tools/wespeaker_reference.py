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

import json
import sys
import types

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

from reference_common import (  # noqa: E402
    arguments, bench, max_cosine_between, pick_files, randomise_batchnorm)

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
    args = arguments(__doc__.split("\n\n")[0],
                     "m_channels 4 and embed_dim 32 (the committed CI fixture)")

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
    # Calibrated on noise: the statistics only need to be far from their init.
    randomise_batchnorm(
        model,
        lambda: [model(torch.randn(4, 200, model.feat_dim, generator=generator))
                 for _ in range(4)],
        generator)

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
    meta = {
        "model": model_name,
        "m_channels": m_channels,
        "model_args": model_args,
        "projection_classes": classes,
        "seed": args.seed,
        "window_type": speaker.window_type,
        "max_seconds": args.max_seconds,
        "files": entries,
        "max_cosine_between_files": max_cosine_between(embeddings),
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
        bench("wespeaker ResNet34 (PyTorch)",
              [read_pcm(path, max_samples) for path in files],
              lambda pcm: speaker.extract_embedding_from_pcm(pcm, 16000), args.bench_repeats)

if __name__ == "__main__":
    main()
