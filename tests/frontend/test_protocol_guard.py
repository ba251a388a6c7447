"""The pure parts of the front end's guard on uvicorn's protocol: how long a request may take to arrive, and the
answer written straight to the socket when a connection is refused."""

from __future__ import annotations

import pytest

from scalablejob.model.config import HttpLimits
from scalablejob.upstream.uvicorn_internals import refusal, request_allowance


@pytest.mark.parametrize(
    ("timeout_s", "rate", "received", "allowed"),
    [
        pytest.param(30, 65536, 0, 30.0, id="nothing-in-yet"),
        pytest.param(30, 65536, 655360, 40.0, id="a-second-per-rate-bytes"),
        pytest.param(2, 0, 10**9, 2.0, id="rate-0-fixed-deadline"),
        pytest.param(1, 2000, 3000, 2.5, id="fractions"),
    ],
)
def test_a_request_may_take_its_timeout_plus_a_second_per_min_rate_bytes_received(timeout_s, rate, received, allowed):
    limits = HttpLimits(request_timeout_s=timeout_s, min_request_rate=rate)
    assert request_allowance(limits, received) == allowed


def test_a_refusal_is_a_whole_answer_that_closes_and_may_say_when_to_retry():
    answer = refusal(503, "too many", retry_after_s=1)
    assert answer == (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
                      b"content-length: 8\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many")  # fmt: skip
    assert b"retry-after" not in refusal(408, "late")
