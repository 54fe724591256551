"""What the encoder reference scripts (speechbrain_reference.py, wespeaker_reference.py) share:
their command line, the librispeech-mini files they record, the BatchNorm randomisation that
makes a random checkpoint exercise eval-mode BatchNorm, and the one-thread throughput loop.
Reference work only; never used by the product."""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/librispeech-mini"


def arguments(description, reduced_help):
    """The scripts' common command line, parsed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--reduced", action="store_true", help=reduced_help)
    parser.add_argument("--files", type=int, default=3, help="librispeech-mini files")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="keep only the first seconds of each file (0: whole file)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("VOCALGUARD_LIBRISPEECH_MINI", DEFAULT_DATA)))
    parser.add_argument("--bench", action="store_true",
                        help="reference throughput at one thread (features + embedding)")
    parser.add_argument("--bench-repeats", type=int, default=3)
    return parser.parse_args()


def pick_files(data, count):
    """`count` test-other files, taking the first file of each speaker in turn (speakers and
    files in sorted order), so that a few files already span several speakers."""
    speakers = [sorted(d.glob("*.flac")) for d in sorted((data / "test-other").iterdir())
                if d.is_dir()]
    files = [f for rank in range(max(map(len, speakers), default=0))
             for files in speakers if rank < len(files) for f in [files[rank]]]
    if len(files) < count:
        raise SystemExit(f"{data}: only {len(files)} test-other files, {count} asked")
    return files[:count]


def randomise_batchnorm(model, calibrate, generator):
    """Sets BatchNorm running statistics from what `calibrate()` runs through the model in
    training mode (a cumulative average), then perturbs them and the affine parameters away
    from their init, so that eval-mode BatchNorm is far from identity."""
    batchnorms = [m for m in model.modules()
                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.train()
    for module in batchnorms:
        module.reset_running_stats()
        module.momentum = None
    with torch.no_grad():
        calibrate()
    for module in batchnorms:
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


def max_cosine_between(embeddings):
    """The largest cosine between two different rows, or None for fewer than two."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cross = unit @ unit.T
    off_diagonal = cross[~np.eye(len(embeddings), dtype=bool)]
    return float(off_diagonal.max()) if off_diagonal.size else None


def bench(name, inputs, embed, repeats):
    """Prints the reference's throughput at one thread: `embed(x)` on every input (16 kHz
    waveforms, shape (1, n)), after one warm-up call, the best of `repeats` passes."""
    torch.set_num_threads(1)
    audio_seconds = sum(x.shape[1] for x in inputs) / 16000
    embed(inputs[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            embed(x)
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"reference": name, "threads": 1, "files": len(inputs),
                      "audio_seconds": audio_seconds, "best_wall_seconds": best,
                      "audio_seconds_per_wall_second": audio_seconds / best}))
