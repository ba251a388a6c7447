"""Tokens are kept in Redis as keyed hashes only: nothing read from Redis authenticates, the token still works
through the SDK, and a queue not served answers exactly as a wrong token does."""

from __future__ import annotations

import httpx
import pytest

from conftest import service_config
from scalablejob.frontend.auth import KEY_FIELD, is_digest
from scalablejob.model import keys

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICE = "vault"


def everything_in(redis_client) -> list[bytes]:
    """Every string and hash field or value Redis holds (what a reader of a dump would find)."""
    values: list[bytes] = []
    for key in redis_client.scan_iter():
        kind = redis_client.type(key)
        if kind == b"string":
            values.append(redis_client.get(key))
        elif kind == b"hash":
            for field, value in redis_client.hgetall(key).items():
                values += [field, value]
    return values


def test_redis_holds_no_token_and_nothing_it_holds_authenticates(serve, redis_client):
    # given two front ends with generated tokens
    served = serve(service_config(SERVICE), names=[SERVICE, "web"], token=None)
    tokens = [served.token(SERVICE), served.token("web")]

    # when everything Redis holds is read, then no token is there: only hashes, and the service's key
    stored = everything_in(redis_client)
    assert not any(token.encode() in value for token in tokens for value in stored)
    registry = redis_client.hgetall(keys.frontend_registry(SERVICE))
    assert set(registry) == {SERVICE.encode(), b"web", KEY_FIELD.encode()}
    assert all(is_digest(registry[name].decode()) for name in (SERVICE.encode(), b"web"))

    # and presenting any of it gets 401, while the tokens themselves work
    with httpx.Client(base_url=served.url, timeout=30) as http:
        path = f"/api/predict/{SERVICE}/sink"
        stolen = {value.decode("utf-8", "replace") for value in registry.values()}
        assert {http.get(path, headers={"Authorization": value}).status_code for value in stolen} == {401}
        assert http.get(path, headers={"Authorization": tokens[0]}).status_code == 200


def test_the_token_still_works_through_the_sdk(serve, run_sdk):
    served = serve(service_config(SERVICE), token=None)
    result = run_sdk(
        served,
        """
index, request_id = inq.put(b"hello", {"taskType": "query"})
out(index=int(index), length=inq.attributes()["stream.length"])
""",
    )
    assert result == {"index": 1, "length": "1"}


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_an_unknown_queue_and_a_wrong_token_get_the_same_answer(serve, method):
    served = serve(service_config(SERVICE))
    with httpx.Client(base_url=served.url, timeout=30) as http:
        answers = [
            http.request(
                method, f"/api/predict/{queue}", headers={"Authorization": token}, params={"taskType": "query"}
            )
            for queue, token in ((SERVICE, "guess"), ("nope", served.token()), ("nope", "guess"))
        ]
    statuses = {answer.status_code for answer in answers}
    texts = {answer.text.replace("nope", SERVICE) for answer in answers}
    assert statuses == {401} and len(texts) == 1, [answer.text for answer in answers]
