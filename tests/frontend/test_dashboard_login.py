"""The dashboard's login, pure: sessions signed with the process's key, bound to the service and its token's hash,
expiring; the cookie's flags."""

from __future__ import annotations

import pytest

from scalablejob.frontend import auth
from scalablejob.frontend.binding import FrontEnd
from scalablejob.frontend.dashboard_login import SESSION_S, DashboardLogin, dashboard_login

KEY = auth.new_key()
CHECK = auth.TokenCheck(KEY, auth.token_digest(KEY, "s3cret"))
T0 = 1_700_000_000.0


def login(clock: float = T0, *, service: str = "svc", check: auth.TokenCheck = CHECK, key: bytes = b"k" * 32):
    return DashboardLogin(service, check, key, lambda: clock)


def test_a_session_is_valid_for_its_lifetime_only():
    value = login().new_session()
    assert login().session_valid(value)
    assert login(T0 + SESSION_S - 1).session_valid(value)
    assert not login(T0 + SESSION_S).session_valid(value)


@pytest.mark.parametrize(
    "other",
    [login(key=b"x" * 32), login(service="other"), login(check=auth.TokenCheck(KEY, auth.token_digest(KEY, "new")))],
    ids=["another process's key", "another service", "a changed token"],
)
def test_a_session_is_worth_nothing_to_another_process_service_or_token(other):
    assert not other.session_valid(login().new_session())


@pytest.mark.parametrize("value", ["", "garbage", "123", ".abc", f"{int(T0) + 99}.{'0' * 64}", "99999999999999.x"])
def test_a_forged_or_broken_session_is_refused(value):
    assert not login().session_valid(value)


def test_a_session_whose_expiry_was_raised_is_refused():
    expires, mac = login().new_session().split(".")
    assert not login().session_valid(f"{int(expires) + 1000}.{mac}")


def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_dashboard_of_its_service():
    header = login().cookie_header("v", secure=False)
    assert header == f"scalablejob-dashboard-svc=v; Max-Age={SESSION_S}; Path=/dashboard; HttpOnly; SameSite=Strict"
    assert login().cookie_header("v", secure=True).endswith("; Secure")
    assert "Max-Age=0;" in login().cookie_header("", secure=False)


def test_the_header_token_or_the_cookie_lets_a_request_in_and_nothing_else_does():
    gate = login()
    assert gate.allows({"Authorization": "s3cret"}, {}) and gate.allows({"Authorization": "Bearer s3cret"}, {})
    assert gate.allows({}, {"scalablejob-dashboard-svc": gate.new_session()})
    assert not gate.allows({}, {})
    assert not gate.allows({"Authorization": "Bearer guess"}, {"scalablejob-dashboard-other": gate.new_session()})


def test_only_the_services_own_front_end_opens_a_dashboard():
    own, web = FrontEnd("svc", "svc", CHECK, "config"), FrontEnd("web", "svc", CHECK, "config")
    found = dashboard_login([web, own])
    assert found is not None and (found.service, found.token) == ("svc", CHECK)
    assert dashboard_login([web]) is None
