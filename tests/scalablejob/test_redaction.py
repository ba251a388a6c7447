"""Masking broker URLs for printing, and finding the password a URL carries."""

from __future__ import annotations

import pytest

from scalablejob.model.redaction import masked_url, url_password, with_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6390/0", "redis://:***@127.0.0.1:6390/0"),
        ("redis://alice:s3cret@redis.example:6379/2", "redis://alice:***@redis.example:6379/2"),
        ("rediss://:p%40ss@host:6380/0", "rediss://:***@host:6380/0"),
        ("redis://host:6379/0?password=s3cret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("redis://alice@host/0", "redis://alice@host/0"),
    ],
)
def test_a_url_is_printed_with_its_password_masked(url, shown):
    assert masked_url(url) == shown


def test_a_url_that_cannot_be_read_is_not_shown_at_all():
    assert masked_url("redis://:pw@[::1") == "***"


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis://:s3cret@h:1/0", "s3cret"),
        ("redis://alice:s3cret@h:1/0", "s3cret"),
        ("redis://:p%40ss@h:1/0", "p@ss"),
        ("redis://h:1/0?password=q", "q"),
        ("redis://h:1/0", None),
        ("not a url [", None),
    ],
)
def test_the_password_a_url_carries(url, password):
    assert url_password(url) == password


def test_with_password_keeps_the_user_and_quotes_the_password():
    assert with_password("redis://127.0.0.1:6390/0", "a/b@c") == "redis://:a%2Fb%40c@127.0.0.1:6390/0"
    assert with_password("redis://alice:old@h:1/0", "new") == "redis://alice:new@h:1/0"
    assert with_password("redis://h:1/0", None) == "redis://h:1/0"
    assert url_password(with_password("redis://h:1/0", "a/b@c")) == "a/b@c"
