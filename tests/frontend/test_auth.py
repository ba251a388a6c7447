"""Token checks: the header must carry the token whose keyed hash is stored; errors never echo a token."""

from __future__ import annotations

import hmac

import pytest

from scalablejob.frontend import auth
from scalablejob.model.errors import AuthError

KEY = auth.new_key()
CHECK = auth.TokenCheck(KEY, auth.token_digest(KEY, "s3cret"))


def test_only_the_exact_token_matches():
    assert CHECK.matches("s3cret")
    for presented in ("s3cre", "s3cret ", "S3CRET", "", "Bearer s3cret"):
        assert not CHECK.matches(presented)


def test_the_stored_digest_is_keyed_and_holds_no_token():
    digest = auth.token_digest(KEY, "s3cret")
    assert auth.is_digest(digest) and "s3cret" not in digest
    assert digest != auth.token_digest(auth.new_key(), "s3cret")  # another service's key: an unrelated hash
    assert not auth.TokenCheck(auth.new_key(), digest).matches("s3cret")


def test_the_comparison_is_constant_time(monkeypatch):
    calls = []
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or a == b)
    CHECK.matches("ünï")
    assert calls == [(auth.token_digest(KEY, "ünï").encode(), CHECK.digest.encode())]


@pytest.mark.parametrize(("presented", "message"), [(None, "missing Authorization header"), ("", "missing"),
                                                    ("guess", "wrong token")])  # fmt: skip
def test_a_missing_or_wrong_token_is_an_auth_error_that_echoes_neither(presented, message):
    with pytest.raises(AuthError, match=message) as error:
        auth.check_token(presented, CHECK, "svc")
    assert "s3cret" not in str(error.value) and ("guess" not in str(error.value))
    assert "queue svc" in str(error.value)


@pytest.mark.parametrize("header", ["s3cret", "Bearer s3cret", "bearer s3cret", "BEARER  s3cret"])
def test_the_token_is_accepted_bare_or_after_the_bearer_scheme(header):
    auth.check_token(header, CHECK, "svc")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic s3cret", "Bearer guess", "Token s3cret"])
def test_a_bearer_header_without_the_token_is_refused(header):
    with pytest.raises(AuthError):
        auth.check_token(header, CHECK, "svc")


def test_a_queue_not_served_fails_like_a_wrong_token():
    with pytest.raises(AuthError) as unknown:
        auth.check_token("s3cret", auth.NO_QUEUE, "svc")
    with pytest.raises(AuthError) as wrong:
        auth.check_token("guess", CHECK, "svc")
    assert str(unknown.value) == str(wrong.value)


def test_new_tokens_are_long_and_different():
    tokens = {auth.new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(token) >= 32 for token in tokens)


@pytest.mark.parametrize(("task_type", "allowed", "refused"), [("query", ("query",), False),
                                                               ("command", ("query",), True),
                                                               ("command", ("command", "query"), False),
                                                               ("query", (), True)])  # fmt: skip
def test_a_task_type_outside_the_scope_is_refused_naming_the_setting(task_type, allowed, refused):
    if not refused:
        auth.check_scope(task_type, allowed, "web")
        return
    with pytest.raises(auth.TaskTypeForbidden) as error:
        auth.check_scope(task_type, allowed, "web")
    assert f"taskType {task_type} is not allowed for front end web" in str(error.value)
    assert '"security": {"frontends": {"web": {"task_types"' in str(error.value)
