"""Example user code: a query handler that reports progress as it works."""

from __future__ import annotations

from scalablejob import Job, QueryContext

job = Job()  # serves any service; Job("demo") would serve only the demo service


@job.query
def shout(body: bytes, ctx: QueryContext) -> dict[str, object]:
    """Answer a text query with its words upper-cased, reporting progress word by word."""
    words = body.decode("utf-8", "replace").split()
    shouted = []
    for done, word in enumerate(words, start=1):
        shouted.append(word.upper())
        ctx.progress(done / len(words), f"{done}/{len(words)} words")
    return {"request_id": ctx.request_id, "words": len(words), "text": " ".join(shouted)}
