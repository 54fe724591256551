#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into fuzz/corpus/<target>/ (ignored by git).

decode_embed: the synthetic fixtures of tests/fixtures/audio (see tools/make_audio_fixtures.sh)
and small WAV files generated here (every PCM width, float, mono and stereo, 8-48 kHz).
upload_request: framed ScreenRequest / EnrollVoiceprintRequest message sequences in the layout
fuzz_targets/upload_request.rs documents, written with a minimal protobuf encoder.
Standard library only; nothing is downloaded.
"""
import math
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures" / "audio"


def tone(rate, seconds):
    return [0.4 * math.sin(2 * math.pi * 440 * i / rate) for i in range(int(rate * seconds))]


def wav(rate, channels, bits, samples, fmt_tag=1):
    """A RIFF/WAVE file of `samples` (one list per channel) as `bits`-bit PCM or float."""
    frames = []
    for i in range(len(samples[0])):
        for ch in samples:
            s = max(-1.0, min(1.0, ch[i]))
            if fmt_tag == 3:
                frames.append(struct.pack("<f", s))
            elif bits == 8:
                frames.append(struct.pack("<B", int(s * 127) + 128))
            elif bits == 16:
                frames.append(struct.pack("<h", int(s * 32767)))
            elif bits == 24:
                frames.append(struct.pack("<i", int(s * 8388607))[:3])
            else:
                frames.append(struct.pack("<i", int(s * 2147483647)))
    data = b"".join(frames)
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def enum(number, value):
    return varint(number << 3) + varint(value)


def framed(messages):
    return b"".join(struct.pack("<H", len(m)) + m for m in messages)


def upload_seed(rpc, limit, timeout, messages):
    t = timeout.encode()
    return bytes([rpc]) + struct.pack("<H", limit) + bytes([len(t)]) + t + framed(messages)


def main():
    decode = FUZZ / "corpus" / "decode_embed"
    upload = FUZZ / "corpus" / "upload_request"
    for d in (decode, upload):
        d.mkdir(parents=True, exist_ok=True)

    for fixture in FIXTURES.iterdir():
        if fixture.suffix != ".md":
            shutil.copy(fixture, decode / fixture.name)
    for rate in (8000, 16000, 44100):
        mono = tone(rate, 0.25)
        for bits in (8, 16, 24, 32):
            (decode / f"pcm{bits}_{rate}.wav").write_bytes(wav(rate, 1, bits, [mono]))
        (decode / f"float_{rate}.wav").write_bytes(wav(rate, 1, 32, [mono], fmt_tag=3))
    stereo = tone(48000, 0.25)
    (decode / "stereo_48000.wav").write_bytes(wav(48000, 2, 16, [stereo, [0.0] * len(stereo)]))

    screen_meta = field(1, field(1, b"track") + field(2, b"uploader") + field(3, b"artist") + enum(4, 1))
    enroll_meta = field(1, field(1, b"artist") + enum(2, 1) + field(3, b"reference"))
    chunk = field(2, field(1, b"RIFF....WAVEfmt "))
    seeds = {
        "screen_ok": upload_seed(0, 1024, "5S", [screen_meta, chunk, chunk]),
        "screen_twice": upload_seed(0, 1024, "250m", [screen_meta, screen_meta, chunk]),
        "screen_chunk_first": upload_seed(0, 1024, "1H", [chunk, screen_meta]),
        "screen_too_large": upload_seed(0, 20, "99999999n", [screen_meta, chunk, chunk]),
        "screen_empty_message": upload_seed(0, 1024, "x", [screen_meta, b""]),
        "enroll_ok": upload_seed(1, 1024, "30S", [enroll_meta, chunk]),
        "enroll_no_audio": upload_seed(1, 1024, "7M", [enroll_meta]),
    }
    for name, seed in seeds.items():
        (upload / name).write_bytes(seed)


if __name__ == "__main__":
    main()
