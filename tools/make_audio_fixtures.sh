#!/usr/bin/env bash
# Regenerates the small synthetic audio fixtures in tests/fixtures/audio/.
#
# Every fixture is the same synthetic signal: 0.4*sin(2*pi*440*t) + 0.2*sin(2*pi*1000*t),
# 1.5 s long. Stereo fixtures carry the signal on the left channel and silence on the right.
# No recorded or third-party audio is used. Requires ffmpeg with libmp3lame, libvorbis and
# libopus (Debian: apt-get install -y ffmpeg).
set -euo pipefail

out_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/audio"
mkdir -p "$out_dir"

signal='0.4*sin(2*PI*440*t)+0.2*sin(2*PI*1000*t)'

# make NAME RATE CHANNEL_EXPR [ENCODER ARGS...]
make() {
    local name="$1" rate="$2" expr="$3"
    shift 3
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "aevalsrc=${expr}:s=${rate}:d=1.5" \
        -map_metadata -1 -fflags +bitexact -flags:a +bitexact \
        "$@" "$out_dir/$name"
}

make tone_22050_mono.flac 22050 "$signal" -c:a flac -sample_fmt s16
make tone_44100_mono.mp3 44100 "$signal" -c:a libmp3lame -b:a 64k
make tone_48000_stereo.ogg 48000 "${signal}|0" -c:a libvorbis -q:a 2
make tone_44100_mono.m4a 44100 "$signal" -c:a aac -b:a 64k -movflags +faststart
make tone_48000_mono.opus 48000 "$signal" -c:a libopus -b:a 16k

ls -l "$out_dir"
