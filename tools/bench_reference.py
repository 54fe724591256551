#!/usr/bin/env python3
"""End-to-end speed of the reference GE2E encoder (Resemblyzer 0.1.4 on PyTorch, CPU).

For every file of librispeech-mini (``**/*.flac``, sorted; 351 files) the timed loop runs
``preprocess_wav(path)`` (decode, volume normalisation, VAD trimming) and then
``VoiceEncoder('cpu').embed_utterance(wav)`` (partial slicing, mel, LSTM, averaging), one file at
a time, exactly as ``/work/shared/reference/ge2e-resemblyzer/scripts/speed.py`` does in its two
phases. Imports, model loading and one warm-up file are not timed. Prints one JSON line:

  {"impl": "resemblyzer-0.1.4", "threads": N, "files": 351, "audio_seconds": ...,
   "wall_seconds": ..., "x_realtime": ..., "peak_rss_mib": ...}

``x_realtime`` = audio_seconds / wall_seconds (audio duration of the source files, as speed.py),
``peak_rss_mib`` = peak resident set size of this process (ru_maxrss).

With ``--rust-cmd CMD`` the shell command CMD (e.g. ``target/release/vocalguard bench --threads 1
--json``) is run right after, from the repository root with the same ``LIBRISPEECH_MINI``; its
last stdout line that is a JSON object is taken as its result (same keys, ``impl`` =
"vocalguard"), printed, and followed by ``{"ratio": rust_x_realtime / reference_x_realtime}``.

Run it with the reference venv's Python (see tools/README.md).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "librispeech-mini"
DEFAULT_REF_EMB = (REPO_ROOT.parent / "shared" / "reference" / "ge2e-resemblyzer"
                   / "librispeech-mini-embeddings.jsonl")
EXPECTED_FILES = 351
KEYS = ("impl", "threads", "files", "audio_seconds", "wall_seconds", "x_realtime", "peak_rss_mib")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OpenBLAS/OpenMP/MKL threads for numpy/librosa, set before they are "
                         "imported (default: same as --threads; 0 = leave the libraries' "
                         "defaults, as speed.py did)")
    ap.add_argument("--data", default=os.environ.get("LIBRISPEECH_MINI", str(DEFAULT_DATA)),
                    help="librispeech-mini folder (default $LIBRISPEECH_MINI, else %(default)s)")
    ap.add_argument("--rust-cmd", default=None,
                    help="shell command printing the Rust benchmark's JSON; run after the reference")
    ap.add_argument("--reference-embeddings", default=str(DEFAULT_REF_EMB),
                    help="jsonl of reference embeddings to sanity-check against (untimed; "
                         "skipped if missing)")
    return ap.parse_args()


def peak_rss_mib():
    # Linux: ru_maxrss is in KiB (macOS: bytes)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def run_reference(args, files):
    import warnings
    warnings.filterwarnings("ignore")  # webrtcvad's pkg_resources deprecation warning
    import numpy as np
    import soundfile as sf
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav

    torch.set_num_threads(args.threads)
    audio_seconds = sum(sf.info(str(f)).duration for f in files)
    enc = VoiceEncoder("cpu", verbose=False)
    enc.embed_utterance(preprocess_wav(files[0]))  # warm-up, not timed (as speed.py)

    embs = []
    t0 = time.perf_counter()
    for f in files:
        wav = preprocess_wav(f)
        embs.append(enc.embed_utterance(wav))
    wall = time.perf_counter() - t0

    result = dict(impl="resemblyzer-0.1.4", threads=args.threads, files=len(files),
                  audio_seconds=round(audio_seconds, 4), wall_seconds=round(wall, 4),
                  x_realtime=round(audio_seconds / wall, 3), peak_rss_mib=round(peak_rss_mib(), 1))
    log(f"reference: torch {torch.__version__}, torch threads {torch.get_num_threads()}")

    # Untimed sanity check against the published reference embeddings.
    ref = Path(args.reference_embeddings)
    if ref.is_file():
        want = {}
        for line in ref.read_text().splitlines():
            j = json.loads(line)
            want[j["file"]] = np.asarray(j["embedding"], dtype=np.float32)
        data = Path(args.data)
        diffs = [float(np.max(np.abs(e - want[str(f.relative_to(data))])))
                 for f, e in zip(files, embs) if str(f.relative_to(data)) in want]
        log(f"reference: {len(diffs)} embeddings compared with {ref.name}: "
            f"max abs diff {max(diffs) if diffs else float('nan'):.3g}")
    return result


def run_rust(cmd, data):
    env = dict(os.environ, LIBRISPEECH_MINI=str(data))
    log(f"rust: running {cmd!r} in {REPO_ROOT}")
    p = subprocess.run(cmd, shell=True, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        raise SystemExit(f"--rust-cmd exited with status {p.returncode}")
    for line in reversed(p.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    sys.stdout.write(p.stdout)
    raise SystemExit("--rust-cmd printed no JSON object")


def main():
    args = parse_args()
    blas = args.threads if args.blas_threads is None else args.blas_threads
    if blas > 0:  # must happen before numpy / torch are imported
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[v] = str(blas)

    data = Path(args.data).resolve()
    files = sorted(data.glob("**/*.flac"))
    if not files:
        raise SystemExit(f"no .flac files under {data} (set $LIBRISPEECH_MINI or --data)")
    if len(files) != EXPECTED_FILES:
        log(f"warning: {len(files)} files under {data}, expected {EXPECTED_FILES}")

    ref = run_reference(args, files)
    print(json.dumps(ref), flush=True)
    if args.rust_cmd:
        rust = run_rust(args.rust_cmd, data)
        missing = [k for k in KEYS if k not in rust]
        if missing:
            log(f"warning: the Rust result lacks {missing}")
        print(json.dumps(rust), flush=True)
        if rust.get("files") != ref["files"]:
            log(f"warning: Rust processed {rust.get('files')} files, the reference {ref['files']}")
        if "audio_seconds" in rust and abs(rust["audio_seconds"] - ref["audio_seconds"]) > 0.01 * ref["audio_seconds"]:
            log(f"warning: audio_seconds differ: Rust {rust['audio_seconds']}, reference {ref['audio_seconds']}")
        print(json.dumps({"ratio": round(rust["x_realtime"] / ref["x_realtime"], 3)}), flush=True)


if __name__ == "__main__":
    main()
