"""The queue service's protobuf messages: the same bytes as the SDK's generated code, and back."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from scalablejob.frontend.protocol import DataFrame, decode_frame, decode_frame_list, encode_frame, encode_frame_list

# DataFrameProto(index=7, tags={"a": "1", "b": "2"}, data=b"hi", message="m"), serialized (deterministic) by
# the eas-prediction SDK's own generated queueservice_pb2 under protobuf 3.20.
SDK_BYTES = bytes.fromhex("080712060a016112013112060a01621201321a02686922016d")


def test_a_frame_encodes_to_the_sdks_bytes_whatever_the_tag_order():
    frame = DataFrame(index=7, data=b"hi", tags={"b": "2", "a": "1"}, message="m")
    assert encode_frame(frame) == SDK_BYTES


def test_the_sdks_bytes_decode_to_the_frame():
    assert decode_frame(SDK_BYTES) == DataFrame(index=7, data=b"hi", tags={"a": "1", "b": "2"}, message="m")


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [DataFrame(index=1)],
        [DataFrame(index=2**63 - 1, data=bytes(range(256)), tags={"requestId": "r", "ü": "ñ"}), DataFrame(index=3)],
    ],
    ids=["empty", "defaults", "large-index-binary-unicode"],
)
def test_a_frame_list_round_trips(frames):
    assert decode_frame_list(encode_frame_list(frames)) == frames


def test_no_frames_encode_as_empty_bytes_which_the_sdk_reads_as_an_empty_list():
    assert encode_frame_list([]) == b""


def test_a_list_holds_each_frame_as_field_one():
    frame = DataFrame(index=7, data=b"hi", tags={"a": "1", "b": "2"}, message="m")
    assert encode_frame_list([frame]) == bytes([0x0A, len(SDK_BYTES)]) + SDK_BYTES


def test_malformed_bytes_raise_decode_error():
    with pytest.raises(DecodeError):
        decode_frame(b"\x0a\xff")
