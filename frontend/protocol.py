"""The queue service's wire format: `DataFrameProto` and `DataFrameListProto` of protobuf package `streaming`.

Pure: no I/O. The message classes are built at import from a descriptor written here (no protoc, no generated
code), in a private descriptor pool, so that they never clash with another copy of the same names, such as the
`eas-prediction` SDK's own generated module loaded in the same process.

    message DataFrameProto { uint64 index = 1; map<string, string> tags = 2; bytes data = 3; string message = 4; }
    message DataFrameListProto { repeated DataFrameProto index = 1; }
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "streaming"
CONTENT_TYPE = "application/vnd.google.protobuf"

_F = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True)
class DataFrame:
    """One item of a queue as the protocol carries it."""

    index: int
    data: bytes = b""
    tags: Mapping[str, str] = field(default_factory=dict)
    message: str = ""


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="scalablejob/queueservice.proto", package=PACKAGE, syntax="proto3")
    frame = proto.message_type.add(name="DataFrameProto")
    entry = frame.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    frame.field.add(name="index", number=1, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    frame.field.add(
        name="tags", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
        type_name=f".{PACKAGE}.DataFrameProto.TagsEntry",
    )  # fmt: skip
    frame.field.add(name="data", number=3, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    frame.field.add(name="message", number=4, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    frames = proto.message_type.add(name="DataFrameListProto")
    frames.field.add(
        name="index", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED, type_name=f".{PACKAGE}.DataFrameProto"
    )
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
DataFrameProto: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.DataFrameProto"))
DataFrameListProto: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.DataFrameListProto"))


def _fill(proto: Any, frame: DataFrame) -> None:
    proto.index = frame.index
    proto.data = frame.data
    proto.message = frame.message
    proto.tags.update(frame.tags)


def _frame(proto: Any) -> DataFrame:
    return DataFrame(index=proto.index, data=proto.data, tags=dict(proto.tags), message=proto.message)


def encode_frame(frame: DataFrame) -> bytes:
    """One `DataFrameProto`, as a watcher receives each item; tags in key order, so equal frames encode equally."""
    proto = DataFrameProto()
    _fill(proto, frame)
    return bytes(proto.SerializeToString(deterministic=True))


def encode_frame_list(frames: Iterable[DataFrame]) -> bytes:
    """A `DataFrameListProto`, the body of a get; no frames encode as empty bytes."""
    proto = DataFrameListProto()
    for frame in frames:
        _fill(proto.index.add(), frame)
    return bytes(proto.SerializeToString(deterministic=True))


def decode_frame(raw: bytes) -> DataFrame:
    """The inverse of `encode_frame`; malformed bytes raise google.protobuf.message.DecodeError."""
    proto = DataFrameProto()
    proto.ParseFromString(raw)
    return _frame(proto)


def decode_frame_list(raw: bytes) -> list[DataFrame]:
    """The inverse of `encode_frame_list`."""
    proto = DataFrameListProto()
    proto.ParseFromString(raw)
    return [_frame(item) for item in proto.index]
