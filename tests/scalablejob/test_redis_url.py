"""Broker URLs: plain Redis and Sentinel sets, as every part of the service reads them."""

from __future__ import annotations

import pytest

from scalablejob.model.errors import BrokerError
from scalablejob.store.redis_url import kombu_connection_options, parse_broker_url

SENTINELS = "sentinel://198.51.100.20:26379;sentinel://198.51.100.21:26380;sentinel://198.51.100.22/2"


def test_a_plain_url_is_kept_as_it_is() -> None:
    address = parse_broker_url("redis://:pw@127.0.0.1:6390/0")

    assert not address.is_sentinel and address.replicas == 0
    assert kombu_connection_options("redis://:pw@127.0.0.1:6390/0") == ("redis://:pw@127.0.0.1:6390/0", {})


def test_a_sentinel_url_names_its_sentinels_master_db_and_durable_replicas() -> None:
    address = parse_broker_url(f"{SENTINELS}?master=mymaster&replicas=1")

    assert address.sentinels == (("198.51.100.20", 26379), ("198.51.100.21", 26380), ("198.51.100.22", 26379))
    assert (address.master, address.db, address.replicas, address.password) == ("mymaster", 2, 1, None)


def test_kombu_gets_the_master_as_a_transport_option_and_the_password_in_the_first_part() -> None:
    url, options = kombu_connection_options(
        "sentinel://:s3cret@198.51.100.20:26379;sentinel://198.51.100.21:26379/0?master=mymaster"
    )

    assert url == "sentinel://:s3cret@198.51.100.20:26379;sentinel://198.51.100.21:26379/0"
    assert options == {"master_name": "mymaster"}


def test_our_replicas_parameter_is_not_passed_on_to_redis_py() -> None:
    assert kombu_connection_options("redis://127.0.0.1:6390/0?replicas=1&socket_timeout=5")[0] == (
        "redis://127.0.0.1:6390/0?socket_timeout=5"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://198.51.100.20:26379/0", "needs ?master=NAME"),
        ("sentinel://198.51.100.20:26379;redis://x:1/0?master=m", "expected sentinel://host:port parts"),
        ("sentinel://198.51.100.20:26379/zero?master=m", "expected a database number"),
        ("redis://127.0.0.1:6390/0?replicas=all", "expected a whole number of replicas"),
        ("sentinel://:pw@198.51.100.20:26379/0", "sentinel://:***@198.51.100.20"),
    ],
)
def test_a_bad_url_is_a_clear_error_that_never_shows_the_password(url: str, says: str) -> None:
    with pytest.raises(BrokerError, match="broker URL") as caught:
        parse_broker_url(url)

    assert says in str(caught.value) and "pw@" not in str(caught.value)
