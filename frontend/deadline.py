"""Awaiting under a deadline, at the cost of a timer: the front end's hot path waits so for a put's body and for
the broker's answer to it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """`await awaitable`, TimeoutError after `timeout_s`: a timer on the task itself where Python has one
    (asyncio.timeout, 3.11), which saves the task that wait_for makes per call."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout_s):
            return await awaitable
    try:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError as exc:  # not the built-in TimeoutError before 3.11
        raise TimeoutError from exc
