"""Which front ends a process serves, with which token, in integrated and standalone mode."""

from __future__ import annotations

import fakeredis
import pytest

from scalablejob import keys
from scalablejob.config import parse_config
from scalablejob.errors import BindingError
from scalablejob.frontend.binding import FrontEnd, bind, plan

STANDALONE = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}})
INTEGRATED = parse_config({"metadata": {"name": "svc", "type": "ScalableJobService"}, "front_end": {"token": "cfg"}})


def fixed(token: str = "new"):
    return lambda: token


def test_by_default_the_front_end_is_named_like_the_service():
    assert plan(STANDALONE, (), None, {}, fixed()) == (FrontEnd("svc", "svc", "new", "generated"),)


@pytest.mark.parametrize(
    ("config", "names", "token", "registered", "expected"),
    [
        (INTEGRATED, (), "flag", {"svc": "old"}, ("flag", "--token")),
        (INTEGRATED, (), None, {"svc": "old"}, ("cfg", "config")),
        (STANDALONE, (), None, {"svc": "old"}, ("old", "registry")),
        (STANDALONE, ("web",), None, {}, ("new", "generated")),
    ],
    ids=["flag-first", "then-config", "then-registry", "else-generated"],
)
def test_the_token_comes_from_the_flag_the_config_the_registry_or_is_generated(
    config, names, token, registered, expected
):
    [front_end] = plan(config, names, token, registered, fixed())
    assert (front_end.token, front_end.token_source) == expected


def test_the_configs_token_is_the_one_of_the_front_end_named_like_the_service_only():
    config = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}, "front_end": {"token": "cfg"}})
    tokens = {fe.name: fe.token for fe in plan(config, ("svc", "web"), None, {}, fixed())}
    assert tokens == {"svc": "cfg", "web": "new"}


def test_a_standalone_service_takes_several_front_ends_each_with_its_own_token():
    tokens = iter(["t1", "t2"])
    front_ends = plan(STANDALONE, ("web", "batch"), None, {}, lambda: next(tokens))
    assert [(fe.name, fe.service, fe.token, fe.sink_name) for fe in front_ends] == [
        ("web", "svc", "t1", "web/sink"),
        ("batch", "svc", "t2", "batch/sink"),
    ]


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
        plan(config, names, token, {}, fixed())


def test_bind_records_the_tokens_so_a_restart_keeps_them():
    client = fakeredis.FakeRedis()
    [first] = bind(client, STANDALONE, ("web",), None)
    [again] = bind(client, STANDALONE, ("web",), None)
    [replaced] = bind(client, STANDALONE, ("web",), "mine")
    assert (again.token, again.token_source) == (first.token, "registry")
    assert client.hget(keys.frontend_registry("svc"), "web") == b"mine" and replaced.token == "mine"
