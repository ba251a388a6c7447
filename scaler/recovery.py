"""Recovery: the requests whose worker died, or whose message was lost, go back on their queues to run once more.

kombu's Redis transport keeps every delivered, unacknowledged message in the hash `unacked` (delivery tag ->
[message, exchange, routing key]) and brings it back only after the visibility timeout, 30 days here on purpose
(celery #7924). The scaler owns the processes, so it knows when one died: it puts that worker's messages back at the
head of their queues at once. Each goes back with a new delivery tag, and the request's attempt is bumped, so a
worker that was only frozen can neither write (fencing, in the state scripts) nor, acknowledging its old tag,
remove the new delivery's entry. A message whose request already finished is only dropped.

The reconciler (`reconcile`) enforces the delivery invariant for everything else: a request still open but backed
by nothing (scaler.reconcile) is re-delivered from its unacknowledged message, or re-sent from the body kept in its
front end's input queue, with the reason why: its worker is lost (the reason the loop gives), or nothing backed it.
It reads every open request, queued message and unacknowledged entry, in short pages (scaler.paging), so that no call
holds Redis for long however deep the backlog; scaler.reconciler runs it off the scaler's pass.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import redis
from celery import Celery

from scalablejob.api.client import request_message, send_message
from scalablejob.model.protocol import MESSAGE_HEADER, PROTOCOL_VERSION
from scalablejob.model.routing import TaskType, service_queues
from scalablejob.scaler import paging
from scalablejob.scaler.reconcile import UNBACKED_AFTER_S, Backing, Unacked, lost_calls, reconcile, stale_acks
from scalablejob.store.queues import priority_lists
from scalablejob.store.sink import as_text
from scalablejob.store.state import RequestStore

logger = logging.getLogger(__name__)

NO_ORPHANS: Mapping[str, str] = MappingProxyType({})
UNACKED_PAGE = 100  # unacknowledged entries per HSCAN: as many as workers hold, each with its whole message


class Recoverer(Protocol):
    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]: ...

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        """claimed: the ids live workers hold; orphaned: id -> why its worker is lost (its host was declared dead,
        it fell silent): each is due at once, re-sent with that reason. Returns the ids re-sent."""
        ...


class Recovery:
    """Puts back the messages of workers that died, and re-sends lost requests, through the service's Celery app."""

    def __init__(
        self, app: Celery, client: redis.Redis, service: str, *, unbacked_after_s: float = UNBACKED_AFTER_S
    ) -> None:
        self._app = app
        self._client = client
        self._service = service
        self._requests = RequestStore(client, service)
        self._queues = set(service_queues(service))
        self._lists = [key for queue in sorted(self._queues) for key in priority_lists(queue)]
        self.unbacked_after_s = unbacked_after_s
        self._unbacked_since: dict[str, float] = {}
        self._orphans_sent: set[str] = set()  # orphans re-sent while their lost worker is still reported
        self._calls: dict[str, Unacked] = {}  # the unacknowledged Celery calls seen by the last reconcile
        self._newer_said: set[int | None] = set()  # the protocol versions of requests left to a newer scaler, logged

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        """Put back the messages a dead worker held (task id -> delivery tag); returns the task ids put back."""
        if not held:
            return []
        with self._app.connection_for_write() as connection:
            channel = connection.default_channel
            return [task_id for task_id, tag in held.items() if self._redeliver(channel, task_id, tag, reason)]

    def reconcile(self, claimed: Collection[str], now: float, orphaned: Mapping[str, str] = NO_ORPHANS) -> list[str]:
        """Re-send the open requests backed by nothing for `unbacked_after_s`, and at once those whose worker is lost
        (orphaned: id -> why); drop the unacknowledged messages of requests that ended. Returns the ids re-sent.
        Everything is read in short pages (scaler.paging): a message that moves between pages may be missed on one
        pass, which the bound absorbs, as a request must be unbacked on every pass that spans it."""
        with self._app.connection_for_write() as connection:
            channel = connection.default_channel
            sent = self._put_back_orphans(channel, orphaned)
            open_ids = paging.open_ids(self._requests)  # first: a request created after this is not judged
            queued = paging.queued_ids(self._client, self._lists)
            backing = Backing(queued, set(claimed), self._unacked(channel), self._fresh_orphans(orphaned))
            verdict = reconcile(open_ids, backing, self._unbacked_since, now, self.unbacked_after_s)
            self._unbacked_since = verdict.unbacked_since
            sent += [task_id for task_id in verdict.due if self._send_again(channel, task_id, backing, orphaned)]
            self._orphans_sent.update(request_id for request_id in sent if request_id in orphaned)
            for request_id in stale_acks(backing, open_ids, now, self.unbacked_after_s):
                self._drop_if_ended(channel, request_id, backing.unacked[request_id].tag)
            calls = self._calls
            for task_id in lost_calls(calls, set(claimed), now, self.unbacked_after_s):
                if self._redeliver(channel, task_id, calls[task_id].tag, "its worker is gone"):
                    sent.append(task_id)
        return sent

    def _put_back_orphans(self, channel: Any, orphaned: Mapping[str, str]) -> list[str]:
        """Move the unacknowledged messages of new orphans back to the head of their queues before anything else is
        read: the pass that found them waits for this, and at depth the read of the queues takes a second. One put
        back is no orphan for the rest of the reconcile: a new worker may have taken it already."""
        fresh = self._fresh_orphans(orphaned)
        unacked = self._unacked(channel) if fresh else {}
        sent = [
            request_id
            for request_id in sorted(fresh & unacked.keys())
            if self._redeliver(channel, request_id, unacked[request_id].tag, orphaned[request_id])
        ]
        self._orphans_sent.update(sent)
        return sent

    def _fresh_orphans(self, orphaned: Mapping[str, str]) -> set[str]:
        """The orphans not yet re-sent. One re-sent already counts as any other request from then on: its lost
        worker's record may list it for a while yet, and its new delivery, unacknowledged, is no orphan."""
        self._orphans_sent.intersection_update(orphaned)
        return set(orphaned) - self._orphans_sent

    def _send_again(self, channel: Any, request_id: str, backing: Backing, orphaned: Mapping[str, str]) -> bool:
        """Re-deliver a due request's unacknowledged message, or re-send it from its kept body, saying why."""
        unbacked = f"backed by no message and no live worker for over {self.unbacked_after_s:g} s"
        reason = orphaned[request_id] if request_id in backing.orphaned else unbacked
        message = backing.unacked.get(request_id)
        if message is not None:
            done = self._redeliver(channel, request_id, message.tag, reason)
        else:
            done = self._resend(request_id, reason)
        if done:
            self._unbacked_since.pop(request_id, None)
        return done

    # ---- the moves ---------------------------------------------------------------------------------------------

    def _redeliver(self, channel: Any, task_id: str, tag: str, reason: str) -> bool:
        """Move an unacknowledged message back to the head of its queue under a new delivery tag, and fence the old
        delivery; a message of a request that ended is dropped instead. A Celery call has no request to fence: its
        message goes back as it is, as Celery's late acknowledgement would bring it back."""
        with channel.conn_or_acquire() as client:
            raw = client.hget(channel.unacked_key, tag)
            if not raw:
                return False  # acknowledged (it finished) or already put back: nothing to do
            if not _is_request(raw):
                client.transaction(lambda pipe: channel.requeue_unacked(pipe, tag), channel.unacked_key)
                logger.warning("Celery call %s is back on its queue: %s", task_id, reason)
                return True
            if self._drop_if_ended(channel, task_id, tag):
                return False
            if not self._requests.requeued(task_id, reason):
                return False
            client.transaction(lambda pipe: channel.requeue_unacked(pipe, tag), channel.unacked_key)
        logger.warning("task %s is back on its queue: %s", task_id, reason)
        return True

    def _resend(self, request_id: str, reason: str) -> bool:
        """Send a lost request again from the body kept in its front end's input queue."""
        state = self._requests.get(request_id)
        if state is None or state.status.finished:
            return False
        if not self._writes_version_of(request_id, state.protocol):
            return False
        entry = self._requests.input_entry(state)
        if entry is None or not self._requests.requeued(request_id, reason):
            return False
        frontend = state.frontend or self._service
        message = request_message(
            self._app, self._service, request_id, entry.data, entry.tags, TaskType(state.task_type), state.task,
            frontend,
        )  # fmt: skip
        send_message(self._client, self._service, message)
        logger.warning("request %s was sent again: %s", request_id, reason)
        return True

    def _writes_version_of(self, request_id: str, protocol: int | None) -> bool:
        """Whether this scaler's message is right for a request of `protocol`: one put by a newer release is left to a
        scaler of that release (said once per version), which re-sends it in its own format."""
        if protocol is not None and protocol <= PROTOCOL_VERSION:
            return True
        if protocol not in self._newer_said:
            self._newer_said.add(protocol)
            logger.warning(
                "request %s, put at protocol version %s, is backed by nothing, and this scaler writes version %s: left "
                "for a scaler of its release (upgrade the scalers before the producers)", request_id, protocol,
                PROTOCOL_VERSION,
            )  # fmt: skip
        return False

    def _drop_if_ended(self, channel: Any, task_id: str, tag: str) -> bool:
        state = self._requests.get(task_id)
        if state is not None and not state.status.finished:
            return False
        channel.drop_unacked(tag)
        logger.info("task %s had ended: dropped its stale unacknowledged message", task_id)
        return True

    # ---- what backs the requests --------------------------------------------------------------------------------

    def _unacked(self, channel: Any) -> dict[str, Unacked]:
        """This service's unacknowledged messages of requests by request id, read a page of the hash at a time;
        those of Celery calls are kept apart, in `_calls`."""
        found: dict[str, Unacked] = {}
        self._calls = {}
        with channel.conn_or_acquire() as client:
            cursor: Any = 0
            while True:
                cursor, page = client.hscan(channel.unacked_key, cursor, count=UNACKED_PAGE)
                requests, calls = self._unacked_page(client, channel.unacked_index_key, page)
                found.update(requests)
                self._calls.update(calls)
                if int(cursor) == 0:
                    return found

    def _unacked_page(
        self, client: Any, index_key: str, page: Mapping[bytes, bytes]
    ) -> tuple[dict[str, Unacked], dict[str, Unacked]]:  # fmt: skip
        """One page of unacknowledged entries with their delivery times, read just after them (kombu writes an entry
        and its time in one transaction; one acknowledged meanwhile has no time, and counts as delivered long ago):
        those of requests, and those of Celery calls."""
        tags = {
            as_text(tag): (task_id, _is_request(raw)) for tag, raw in page.items() if (task_id := self._task_of(raw))
        }
        scores: Any = client.zmscore(index_key, list(tags)) if tags else []
        requests: dict[str, Unacked] = {}
        calls: dict[str, Unacked] = {}
        for (tag, (task_id, is_request)), at in zip(tags.items(), scores, strict=True):
            (requests if is_request else calls)[task_id] = Unacked(tag, float(at or 0.0))
        return requests, calls

    def _task_of(self, raw: bytes | str) -> str | None:
        """The task id of an unacked entry of this service's queues; None for anything else."""
        try:
            message, _exchange, routing_key = json.loads(raw)
            if routing_key not in self._queues:
                return None
            return str(message["headers"]["id"])
        except (ValueError, KeyError, TypeError):
            return None


def _is_request(raw: bytes | str) -> bool:
    """Whether an unacknowledged entry is a queue-service request's message (it says its protocol version, or has a
    request's arguments, as a release before versions wrote them), not a Celery call's."""
    try:
        message = json.loads(raw)[0]
        headers = message["headers"]
        if MESSAGE_HEADER in headers:
            return True
        return str(headers.get("task", "")).startswith("scalablejob.") or "frontend" in str(headers.get("kwargsrepr"))
    except (ValueError, KeyError, TypeError, IndexError):
        return True  # unreadable: left to the request checks, which drop it once its request has ended
