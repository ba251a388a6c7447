"""Messages as kombu's Redis transport writes them, where scalablejob writes or reads them itself: a task message
ready for a queue's list, the service's queue declarations, and the task-sent events Celery publishes.

A put pushes its task message itself: `app.send_task` costs three round trips here (the create script, kombu's LPUSH,
and the task-sent PUBLISH) and most of a put's CPU (kombu's producer, retry wrapper and a new Redis client per
publish). A put instead builds the same message (Celery's protocol 2, through `app.amqp.as_task_v2`, serialized by
kombu) and its create script pushes it in the same call: one round trip, and a worker receives exactly what
`send_task` would have sent, plus the protocol version's header (scalablejob.model.protocol), which a worker of a
release before versions ignores.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as json_dumps
from kombu.utils.json import loads as json_loads

from scalablejob.model.protocol import MESSAGE_HEADER, PROTOCOL_VERSION
from scalablejob.store.queues import QueueMessage, priority_list

PERSISTENT = 2  # kombu's delivery_mode for a persistent message, what send_task sets


def task_message(
    app: Celery, task_name: str, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], queue: str,
    priority: int, protocol: int = PROTOCOL_VERSION,
) -> QueueMessage:  # fmt: skip
    """The message `app.send_task(task_name, args, kwargs, task_id=task_id, queue=queue, priority=priority)` sends,
    with the same headers (root id, origin, argument reprs) and the same envelope (base64 body, a delivery tag), and
    the protocol version it is written in (tests write others)."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id, task_name, args=tuple(args), kwargs=dict(kwargs), root_id=task_id, reply_to=app.thread_oid,
    )  # fmt: skip
    headers[MESSAGE_HEADER] = protocol
    headers["ignore_result"] = True  # a request's result is its output queue entry: nothing in Celery's backend
    content_type, content_encoding, data = serialize(body, serializer=app.conf.task_serializer)
    envelope = {
        "body": base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return QueueMessage(priority_list(queue, priority), json_dumps(envelope))


def service_queue_declarations(service: str, queues: Sequence[str]) -> list[Queue]:
    """Celery's declarations of a service's queues: one direct exchange named for the service, each queue bound by
    its own name."""
    exchange = Exchange(service, type="direct")
    return [Queue(name, exchange, routing_key=name) for name in queues]


TASK_EVENTS_EXCHANGE = "celeryev"  # the app's event_exchange (Celery's default, set explicitly by make_app)


def task_sent_pattern() -> str:
    """The Redis pub/sub pattern Celery's task-sent events arrive on: kombu publishes a fanout exchange's message on
    the topic `<prefix><exchange>/<routing key>`, the prefix naming the database (`/0.`), since pub/sub spans them."""
    return f"*{TASK_EVENTS_EXCHANGE}/task.sent"


def published_body(raw: bytes | str) -> Any:
    """The decoded body of a message kombu published (its JSON envelope, the body base64-encoded or not); ValueError,
    KeyError or TypeError when it is not one."""
    envelope: Any = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return json.loads(body)


def message_json(value: Any) -> str:
    """JSON as kombu writes a message's (bytes, dates and decimals included), for values taken from a message."""
    text: str = json_dumps(value)
    return text


def from_message_json(text: str) -> Any:
    return json_loads(text)
