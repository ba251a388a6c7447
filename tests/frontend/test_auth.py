"""Token checks: the header must carry the token exactly; errors never echo a token."""

from __future__ import annotations

import hmac

import pytest

from scalablejob.errors import AuthError
from scalablejob.frontend import auth


def test_only_the_exact_token_matches():
    assert auth.token_matches("s3cret", "s3cret")
    for presented in ("s3cre", "s3cret ", "S3CRET", "", "Bearer s3cret"):
        assert not auth.token_matches(presented, "s3cret")


def test_the_comparison_is_constant_time(monkeypatch):
    calls = []
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or a == b)
    auth.token_matches("ünï", "x")
    assert calls == [("ünï".encode(), b"x")]


@pytest.mark.parametrize(("presented", "message"), [(None, "missing Authorization header"), ("", "missing"),
                                                    ("guess", "wrong token")])  # fmt: skip
def test_a_missing_or_wrong_token_is_an_auth_error_that_echoes_neither(presented, message):
    with pytest.raises(AuthError, match=message) as error:
        auth.check_token(presented, "s3cret", "svc")
    assert "s3cret" not in str(error.value) and ("guess" not in str(error.value))
    assert "queue svc" in str(error.value)


def test_new_tokens_are_long_and_different():
    tokens = {auth.new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(token) >= 32 for token in tokens)
