"""Which front ends a process serves, with which token (kept as a keyed hash) and which task types."""

from __future__ import annotations

import fakeredis
import pytest

from scalablejob.frontend.auth import KEY_FIELD, is_digest, token_digest
from scalablejob.frontend.binding import bind, plan
from scalablejob.model import keys
from scalablejob.model.config import parse_config
from scalablejob.model.errors import BindingError

STANDALONE = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}})
INTEGRATED = parse_config({"metadata": {"name": "svc", "type": "ScalableJobService"}, "front_end": {"token": "cfg"}})
KEY = "00" * 32


def fixed(token: str = "new"):
    return lambda: token


def test_by_default_the_front_end_is_named_like_the_service():
    [front_end] = plan(STANDALONE, (), None, {}, fixed(), KEY)
    assert (front_end.name, front_end.service, front_end.token_source, front_end.new_token) == (
        "svc", "svc", "generated", "new",
    )  # fmt: skip
    assert front_end.token.matches("new") and front_end.token.digest == token_digest(KEY, "new")


@pytest.mark.parametrize(
    ("config", "names", "token", "registered", "expected"),
    [
        (INTEGRATED, (), "flag", {"svc": token_digest(KEY, "old")}, ("flag", "--token", None)),
        (INTEGRATED, (), None, {"svc": token_digest(KEY, "old")}, ("cfg", "config", None)),
        (STANDALONE, (), None, {"svc": token_digest(KEY, "old")}, ("old", "registry", None)),
        (STANDALONE, (), None, {"svc": "old"}, ("old", "registry, was plain text", None)),
        (STANDALONE, ("web",), None, {}, ("new", "generated", "new")),
    ],
    ids=["flag-first", "then-config", "then-registry", "plain-text-registry", "else-generated"],
)
def test_the_token_comes_from_the_flag_the_config_the_registry_or_is_generated(
    config, names, token, registered, expected
):
    [front_end] = plan(config, names, token, registered, fixed(), KEY)
    valid, source, shown = expected
    assert front_end.token.matches(valid) and (front_end.token_source, front_end.new_token) == (source, shown)
    assert is_digest(front_end.token.digest)


def test_the_configs_token_is_the_one_of_the_front_end_named_like_the_service_only():
    config = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}, "front_end": {"token": "cfg"}})
    svc, web = plan(config, ("svc", "web"), None, {}, fixed(), KEY)
    assert svc.token.matches("cfg") and web.token.matches("new") and not web.token.matches("cfg")


def test_a_standalone_service_takes_several_front_ends_each_with_its_own_token():
    tokens = iter(["t1", "t2"])
    web, batch = plan(STANDALONE, ("web", "batch"), None, {}, lambda: next(tokens), KEY)
    assert [(fe.name, fe.service, fe.new_token, fe.sink_name) for fe in (web, batch)] == [
        ("web", "svc", "t1", "web/sink"),
        ("batch", "svc", "t2", "batch/sink"),
    ]
    assert web.token.matches("t1") and not web.token.matches("t2")


def test_scopes_default_to_query_for_other_front_ends_and_follow_the_config():
    assert [fe.task_types for fe in plan(STANDALONE, ("svc", "web"), None, {}, fixed(), KEY)] == [
        ("command", "query"), ("query",),
    ]  # fmt: skip
    security = {"frontends": {"svc": {"task_types": ["query"]}, "web": {"task_types": ["query", "command"]}}}
    config = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}, "security": security})
    assert [fe.task_types for fe in plan(config, ("svc", "web"), None, {}, fixed(), KEY)] == [
        ("query",), ("query", "command"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "names", "token", "message"),
    [
        (INTEGRATED, ("web",), None, "service svc is a ScalableJobService: it takes work from its own front end only"),
        (STANDALONE, ("web", "web"), None, "expected each name once"),
        (STANDALONE, ("bad name",), None, "front end name 'bad name': expected a name matching"),
        (STANDALONE, ("a", "b"), "t", "--token names one front end's token, but 2 are served"),
        (STANDALONE, (), " ", "--token: expected a non-empty token"),
    ],
    ids=["integrated-other-name", "duplicate", "bad-name", "one-token-two-front-ends", "blank-token"],
)
def test_bindings_that_cannot_be_are_refused_with_the_reason(config, names, token, message):
    with pytest.raises(BindingError, match=message):
        plan(config, names, token, {}, fixed(), KEY)


def test_bind_records_only_hashes_so_a_restart_keeps_the_token_and_redis_holds_none():
    client = fakeredis.FakeRedis()
    [first] = bind(client, STANDALONE, ("web",), None)
    [again] = bind(client, STANDALONE, ("web",), None)
    [replaced] = bind(client, STANDALONE, ("web",), "mine")
    assert first.new_token is not None and again.new_token is None and again.token_source == "registry"
    assert again.token.matches(first.new_token)
    stored = client.hgetall(keys.frontend_registry("svc"))
    assert set(stored) == {b"web", KEY_FIELD.encode()}
    assert not any(secret in value for value in stored.values() for secret in (first.new_token.encode(), b"mine"))
    assert replaced.token.matches("mine") and stored[b"web"].decode() == replaced.token.digest


def test_a_plain_text_record_of_an_older_version_is_replaced_by_its_hash():
    client = fakeredis.FakeRedis()
    client.hset(keys.frontend_registry("svc"), "web", "old-plain")
    [front_end] = bind(client, STANDALONE, ("web",), None)
    assert front_end.token_source == "registry, was plain text" and front_end.token.matches("old-plain")
    assert is_digest(client.hget(keys.frontend_registry("svc"), "web").decode())
