"""What to tell a command whose embedded broker does not answer while an `up` runs in its data folder.

Without an `up`, "start one with `scalablejob up`" is the way out; with one, that advice goes in a circle (the new
`up` says one already runs). So the message says what runs, what does not answer, and what to do: wait for `up` to
start its Redis again (it does when Redis exits), or stop the stack and start it again (a Redis that hangs, such as
one stopped with SIGSTOP, is not restarted).
"""

from __future__ import annotations

from pathlib import Path

from scalablejob.local.stack_record import running_stack
from scalablejob.store.broker import embedded_record


def silent_broker_advice(folder: Path, detail: str) -> str | None:
    """The message for a broker of `folder` that does not answer (`detail`: how it failed), when an `up` runs there;
    None when none does (then the usual advice, start one, is right)."""
    stack = running_stack(folder)
    if stack is None:
        return None
    record = embedded_record(folder)
    which = f" ({record['url']}, pid {record.get('pid')})" if record else ""
    return (
        f"scalablejob up ({stack.describe()}) runs in {folder}, but its Redis{which} does not "
        f"answer: {detail}. up starts its Redis again when it exits, so try again in a few seconds; if it still does "
        f"not answer, stop the stack with `scalablejob down --data-dir {folder}` and start it again with "
        f"`scalablejob up CONFIG --data-dir {folder}`"
    )
