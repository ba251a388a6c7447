"""The transport overrides and calls kombu's private names; a kombu release that renamed one must stop the process
at import with one error naming kombu's version and the versions supported, never leave an override unused."""

from __future__ import annotations

import re
from importlib import metadata

import kombu
import pytest
from celery.app import amqp as celery_amqp
from kombu import connection as kombu_connection
from kombu.transport import redis as kombu_redis

from scalablejob.transport import connection
from scalablejob.transport import kombu_redis as ours
from scalablejob.upstream.check import UpstreamChanged, installed_version, require, require_equal, supported_versions

# what scalablejob adds to kombu's classes; every other name they define overrides one of kombu's
OWN_NAMES = {
    ours.QoS: {"finish_acks", "direct_acks", "_record", "_acknowledged_by_finish", "_unrecorded", "record_unrecorded",
              "_write_record"},
    ours.ChannelMixin: {
        "gate_dispatch", "keep_unacked", "client_for_calls", "brpop_client_id", "requeue_unacked", "drop_unacked",
        "_gate",
        "_watcher", "_shared_client",
    },
}  # fmt: skip
KOMBUS = [
    (ours.QoS, kombu_redis.QoS),
    (ours.ChannelMixin, kombu_redis.Channel),
    (ours.Channel, kombu_redis.Channel),
    (ours.SentinelChannel, kombu_redis.SentinelChannel),
    (ours.Transport, kombu_redis.Transport),
    (ours.SentinelTransport, kombu_redis.SentinelTransport),
    (connection.OurTransport, kombu.Connection),
    (connection.Connection, kombu.Connection),
    (connection.PooledConnection, kombu_connection.PooledConnection),
    (connection.ConnectionPool, kombu_connection.ConnectionPool),
    (connection.AMQP, celery_amqp.AMQP),
]
CLASS_BOOKKEEPING = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__annotations__",
                     "__firstlineno__", "__static_attributes__", "__parameters__", "__orig_bases__"}  # fmt: skip


class Fake:
    """Stands in for a class of another project that lacks a name scalablejob relies on."""

    present = 1


def overrides(cls: type) -> set[str]:
    return set(vars(cls)) - CLASS_BOOKKEEPING - OWN_NAMES.get(cls, set())


@pytest.mark.parametrize(("cls", "kombus"), KOMBUS, ids=lambda cls: cls.__qualname__)
def test_every_name_we_override_is_one_of_kombus(cls: type, kombus: type) -> None:
    missing = sorted(name for name in overrides(cls) if not hasattr(kombus, name))

    assert missing == [], f"{cls.__qualname__} overrides names kombu {installed_version('kombu')} does not have"


def test_the_overrides_are_the_ones_the_import_checks() -> None:
    # each private one is in a `require` of kombu_redis: a new override belongs there, and here
    assert overrides(ours.ChannelMixin) == {"QoS", "__init__", "_create_client", "_brpop_start", "_brpop_read"}
    assert overrides(ours.QoS) == {"append", "ack", "reject"}
    assert overrides(ours.Transport) == overrides(ours.SentinelTransport) == {"Channel"}


def test_our_channels_come_before_kombus_in_the_method_order() -> None:
    for channel, kombus in [(ours.Channel, kombu_redis.Channel), (ours.SentinelChannel, kombu_redis.SentinelChannel)]:
        order = channel.__mro__
        assert order.index(ours.ChannelMixin) < order.index(kombus)


def test_require_names_the_project_its_version_the_missing_names_and_the_versions_supported() -> None:
    with pytest.raises(UpstreamChanged) as raised:
        require("kombu", Fake, ("present", "_renamed", "_gone"))

    message = str(raised.value)
    assert f"kombu {metadata.version('kombu')} has no _renamed, _gone on {__name__}.Fake" in message
    assert supported_versions("kombu") in message
    assert f"pip install 'kombu{supported_versions('kombu')}'" in message


def test_require_passes_when_every_name_is_there() -> None:
    require("kombu", Fake, ("present",))
    require("kombu", kombu_redis.Channel, ("_brpop_start", "_brpop_read", "_create_client"))


def test_the_supported_versions_are_scalablejobs_requirement() -> None:
    assert re.fullmatch(r"[<>=!~]+[\d.]+(,[<>=!~]+[\d.]+)*", supported_versions("kombu"))
    assert metadata.version("kombu") and installed_version("no-such-project-here") == "(version unknown)"


def test_require_equal_names_the_value_kombu_uses_and_the_one_we_write() -> None:
    with pytest.raises(UpstreamChanged) as raised:
        require_equal("kombu", "the unacked hash", "unacked_v2", "unacked")

    message = str(raised.value)
    assert f"kombu {metadata.version('kombu')} uses 'unacked_v2' as the unacked hash" in message
    assert "where scalablejob writes 'unacked'" in message
    assert supported_versions("kombu") in message


def test_require_equal_passes_on_equal_values() -> None:
    require_equal("kombu", "the unacked hash", kombu_redis.Channel.unacked_key, "unacked")


def test_an_upstream_change_is_a_scalablejob_error() -> None:
    from scalablejob.model.errors import ScalableJobError

    assert issubclass(UpstreamChanged, ScalableJobError)


def test_the_connection_overrides_are_the_ones_its_import_checks() -> None:
    assert overrides(connection.OurTransport) == {"get_transport_cls", "__eqhash__"}
    assert overrides(connection.Connection) == {"Pool"} and overrides(connection.PooledConnection) == set()
    assert overrides(connection.ConnectionPool) == {"new"}
    assert overrides(connection.AMQP) == {"Connection", "BrokerConnection"}
