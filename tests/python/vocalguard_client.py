"""A VocalGuard client in Python, on stubs that grpcio-tools generated from proto/.

It generates nothing itself: `--stubs DIR` names the folder that holds the generated
`vocalguard/v1/*_pb2.py` and `*_pb2_grpc.py` modules, made with

    python -m grpc_tools.protoc -I proto --python_out=DIR --grpc_python_out=DIR \
        proto/vocalguard/v1/*.proto

`enroll-and-screen` creates an artist, enrolls each `--enroll` file as a spoken voiceprint
(streamed in 64 KiB chunks), optionally authorizes a party, then screens the `--screen` file
twice, with the streaming `Screen` and with the unary `ScreenClip`, and prints one JSON object
with both answers on stdout.

`reflect` needs no stubs: it lists the server's services with grpcio-reflection's descriptor
database (which speaks reflection `v1alpha`), resolves `vocalguard.v1.ScreeningService` through
it to its methods, and lists the services again over reflection `v1` (the same messages on
the `grpc.reflection.v1` path), printing all three as one JSON object.

A failed call prints its status code and details on stderr and exits 1.
tests/python_client.rs runs it against a real server; the packages it needs are pinned in
tests/python/requirements.txt.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

CHUNK_BYTES = 64 * 1024
DEADLINE_S = 120.0


class CallFailed(Exception):
    """An RPC that ended with a non-OK status."""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="HOST:PORT of vocalguard serve")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "reflect", help="list the services over reflection v1alpha and v1 (no stubs needed)"
    )
    flow = commands.add_parser(
        "enroll-and-screen", help="create an artist, enroll voiceprints, screen a file"
    )
    flow.add_argument(
        "--stubs",
        required=True,
        type=Path,
        help="folder holding the generated vocalguard/v1 modules",
    )
    flow.add_argument("--artist-id", required=True)
    flow.add_argument("--display-name", required=True)
    flow.add_argument("--enroll", required=True, nargs="+", type=Path, metavar="FILE")
    flow.add_argument("--screen", required=True, type=Path, metavar="FILE")
    flow.add_argument("--uploader", required=True, metavar="PARTY", help="uploader_party_id")
    flow.add_argument("--authorize", metavar="PARTY", help="party the artist authorizes first")
    args = parser.parse_args(argv)
    if args.command == "enroll-and-screen":
        for path in [*args.enroll, args.screen]:
            if not path.is_file():
                parser.error(f"{path} is not a file")
    return args


def load_stubs(stubs_dir):
    """Imports the generated modules from `stubs_dir`."""
    sys.path.insert(0, str(stubs_dir))
    names = [
        "common_pb2",
        "registry_pb2",
        "registry_pb2_grpc",
        "screening_pb2",
        "screening_pb2_grpc",
    ]
    return argparse.Namespace(
        **{name: importlib.import_module(f"vocalguard.v1.{name}") for name in names}
    )


def invoke(name, method, request):
    """Calls `method` with the deadline, turning a failed status into CallFailed."""
    try:
        return method(request, timeout=DEADLINE_S)
    except grpc.RpcError as err:
        raise CallFailed(f"{name} failed: {err.code().name}: {err.details()}") from err


def chunks(path):
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            yield block


def enroll_requests(pb, artist_id, path):
    metadata = pb.registry_pb2.EnrollMetadata(
        artist_id=artist_id,
        label=pb.registry_pb2.VOICEPRINT_LABEL_SPEAKING,
        description=path.name,
    )
    yield pb.registry_pb2.EnrollVoiceprintRequest(metadata=metadata)
    for block in chunks(path):
        yield pb.registry_pb2.EnrollVoiceprintRequest(chunk=pb.common_pb2.AudioChunk(data=block))


def screen_requests(pb, metadata, path):
    yield pb.screening_pb2.ScreenRequest(metadata=metadata)
    for block in chunks(path):
        yield pb.screening_pb2.ScreenRequest(chunk=pb.common_pb2.AudioChunk(data=block))


def optional(message, field):
    return getattr(message, field) if message.HasField(field) else None


def enrollment_summary(path, response):
    voiceprint = response.voiceprint
    return {
        "file": str(path),
        "voiceprint_id": voiceprint.voiceprint_id,
        "voiced_s": voiceprint.voiced_s,
        "duration_s": voiceprint.duration_s,
        "consistency_score": optional(response, "consistency_score"),
        "nearest_other_artist_score": optional(response, "nearest_other_artist_score"),
        "nearest_other_artist_id": response.nearest_other_artist_id,
        "registry_version": response.context.registry_version,
    }


def screen_summary(pb, response):
    enums = pb.screening_pb2
    return {
        "track_id": response.track_id,
        "decision": enums.Decision.Name(response.decision),
        "review_reason": enums.ReviewReason.Name(response.review_reason),
        "explanation": response.explanation,
        "flags": [enums.Flag.Name(flag) for flag in response.flags],
        "top_match": response.matches[0].artist_id if response.matches else None,
        "matches": [
            {
                "artist_id": match.artist_id,
                "display_name": match.display_name,
                "matched": match.matched,
                "uploader_authorized": match.uploader_authorized,
                "credited": match.credited,
                "best_score": match.best_score,
                "aggregate_score": match.aggregate_score,
                "matching_windows": match.matching_windows,
                "matched_voiced_share": match.matched_voiced_share,
                "time_ranges": [[r.start_s, r.end_s] for r in match.time_ranges],
            }
            for match in response.matches
        ],
        "duration_s": response.duration_s,
        "voiced_s": response.voiced_s,
        "windows": response.windows,
        "context": {
            "model": response.context.model,
            "model_sha256": response.context.model_sha256,
            "registry_version": response.context.registry_version,
        },
        "thresholds": {
            "match": response.thresholds.match,
            "review": response.thresholds.review,
            "min_voiced_s": response.thresholds.min_voiced_s,
            "window_s": response.thresholds.window_s,
            "hop_s": response.thresholds.hop_s,
        },
    }


def enroll_and_screen(pb, channel, args):
    registry = pb.registry_pb2_grpc.RegistryServiceStub(channel)
    screening = pb.screening_pb2_grpc.ScreeningServiceStub(channel)
    artist = invoke(
        "CreateArtist",
        registry.CreateArtist,
        pb.registry_pb2.CreateArtistRequest(
            artist_id=args.artist_id, display_name=args.display_name
        ),
    )
    enrollments = [
        enrollment_summary(
            path,
            invoke(
                f"EnrollVoiceprint({path.name})",
                registry.EnrollVoiceprint,
                enroll_requests(pb, artist.artist_id, path),
            ),
        )
        for path in args.enroll
    ]
    if args.authorize is not None:
        invoke(
            "GrantAuthorization",
            registry.GrantAuthorization,
            pb.registry_pb2.GrantAuthorizationRequest(
                artist_id=artist.artist_id, party_id=args.authorize, note="python client test"
            ),
        )
    metadata = pb.screening_pb2.TrackMetadata(
        track_id=args.screen.name,
        uploader_party_id=args.uploader,
        ai_disclosure=pb.screening_pb2.AI_DISCLOSURE_NONE,
    )
    streamed = invoke("Screen", screening.Screen, screen_requests(pb, metadata, args.screen))
    clip = invoke(
        "ScreenClip",
        screening.ScreenClip,
        pb.screening_pb2.ScreenClipRequest(metadata=metadata, audio=args.screen.read_bytes()),
    )
    return {
        "artist": {"artist_id": artist.artist_id, "display_name": artist.display_name},
        "enrollments": enrollments,
        "authorized_party": args.authorize,
        "screen": screen_summary(pb, streamed),
        "screen_clip": screen_summary(pb, clip),
    }


def reflect(channel):
    """What reflection v1alpha and v1 say about the server."""
    database = ProtoReflectionDescriptorDatabase(channel)
    try:
        v1alpha_services = sorted(database.get_services())
        screening = descriptor_pool.DescriptorPool(database).FindServiceByName(
            "vocalguard.v1.ScreeningService"
        )
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                     timeout=DEADLINE_S)
        v1_services = sorted(
            service.name for answer in answers for service in answer.list_services_response.service
        )
    except grpc.RpcError as err:
        raise CallFailed(f"reflection failed: {err.code().name}: {err.details()}") from err
    return {
        "v1alpha_services": v1alpha_services,
        "v1_services": v1_services,
        "screening_methods": [method.name for method in screening.methods],
    }


def main(argv):
    args = parse_args(argv)
    try:
        with grpc.insecure_channel(args.server) as channel:
            if args.command == "reflect":
                report = reflect(channel)
            else:
                report = enroll_and_screen(load_stubs(args.stubs), channel, args)
    except CallFailed as err:
        print(err, file=sys.stderr)
        return 1
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
