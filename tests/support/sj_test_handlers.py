"""User code for integration tests: a query handler steered by a JSON body."""

from __future__ import annotations

import json
import time

from scalablejob import Job, QueryContext

job = Job()  # serves any service


@job.query
def handle(body: bytes, ctx: QueryContext) -> bytes:
    """{"sleep": s} waits, {"fail": msg} raises, {"progress": f} reports, {"until_cancelled": true} runs until
    cancelled; the answer echoes the body."""
    try:
        request = json.loads(body)
    except ValueError:
        request = {}
    if not isinstance(request, dict):
        request = {}
    if "progress" in request:
        ctx.progress(float(request["progress"]), "halfway")
    while request.get("until_cancelled") and not ctx.cancelled:
        time.sleep(0.02)
    time.sleep(float(request.get("sleep", 0)))
    if "fail" in request:
        raise RuntimeError(request["fail"])
    return b"echo:" + body
