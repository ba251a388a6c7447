"""The protocol version: what one release of scalablejob writes and another reads, and which versions talk. Pure.

Version 1 is the format of every release before versions were written (up to 2026-12-07) and of the first one that
writes them:
- a task message is Celery's message protocol 2 on `<service>.command` or `<service>.query` (one Redis list per
  priority), for the task `scalablejob.command`, `scalablejob.query` or a named task (@job.task), with the args
  `(body: bytes, tags: dict[str, str])` and the kwargs `{"frontend": str}` (whose output queue gets the request's
  entries; a message without it takes the front end from the request's state);
- the records, each a Redis structure of one owner module: the request state (store.state), worker presence
  (store.presence), host records and the leader's plan (store.host_records), the task registry, the front ends'
  input streams and the output queue's entries (store.sink).

A message says its version in the header MESSAGE_HEADER (Celery copies a header it does not know into the task's
request, and a worker of a release before versions ignores it), a record in its field RECORD_FIELD; neither means 1.

What bumps the version: a change that a component of the previous version would get wrong. For messages: an argument
or kwarg added or removed, or one whose meaning or type changes; a header the worker must obey; a queue, task name
or task type that changes meaning. For records: a field removed, or changed in meaning or type. What does not: a
header or a record field that older readers may ignore (Celery ignores headers it does not know; every record reader
here reads the fields it knows and takes a missing one as its version-1 default).

The rules:
- a worker of version N runs the messages of versions N-1 and N (one release back: upgrading one release at a time
  strands no message); any other version, or arguments it does not take, go back on the queue for another worker,
  never to a failure (workers/protocol_check.py);
- a producer (JobClient, the front end, the scaler's re-sends) of version N writes version N: it is upgraded after
  the workers;
- records change by expanding, then contracting a release later: what version N writes, version N-1 reads right, so
  two neighbouring releases run side by side in any mix.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_VERSION = 1  # what this release writes
UNVERSIONED = 1  # the version of a message or record that says none: written by a release before versions
MESSAGE_HEADER = "scalablejob_protocol"
RECORD_FIELD = "protocol"


def oldest_handled(own: int = PROTOCOL_VERSION) -> int:
    """The oldest message version a worker of version `own` runs: the previous release's."""
    return max(UNVERSIONED, own - 1)


def handled_range(own: int = PROTOCOL_VERSION) -> str:
    """The versions a worker of version `own` runs, as logs and `status` show them: `1`, `1-2`."""
    oldest = oldest_handled(own)
    return str(own) if oldest == own else f"{oldest}-{own}"


def shown_version(version: int | None) -> str:
    """A version as `status` shows it (`?`: the record's was unreadable)."""
    return "?" if version is None else str(version)


def version_of(value: object) -> int | None:
    """The version a message header or record field says: its integer (a record's field is text), 1 when it says
    none, None when it does not read as a version (a positive integer)."""
    if value is None:
        return UNVERSIONED
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


@dataclass(frozen=True)
class Unhandled:
    """Why a worker puts a message back instead of running it: one line of its log (said once per reason) and its
    presence record."""

    reason: str
    version: int | None  # what the message says (None: unreadable)


def message_verdict(header: object, argument_error: str | None, own: int = PROTOCOL_VERSION) -> Unhandled | None:
    """None when a worker of version `own` runs a message whose MESSAGE_HEADER is `header` and whose arguments bind
    to its task (`argument_error`: why they do not, else None); otherwise why it goes back on the queue."""
    version = version_of(header)
    runs = handled_range(own)
    if version is None:
        return Unhandled(f"unreadable protocol version {header!r} (this worker runs {runs})", None)
    if version > own:
        return Unhandled(f"protocol version {version}, newer than this worker's {runs}", version)
    if version < oldest_handled(own):
        return Unhandled(f"protocol version {version}, older than this worker's {runs}", version)
    if argument_error is not None:
        return Unhandled(f"arguments this worker's task does not take ({argument_error}), at protocol {version}",
                         version)  # fmt: skip
    return None
