"""`scalable_job.run_as`: the user (and group) a worker starts its jobs as, looked up on this host.

A job of the worker's own user can read what that user can: the data folder's Redis password, the worker's files,
and, but for the worker being non-dumpable (processes.forbid_inspection), its environment. A job of another user can
read none of them; only root may start one, so a worker that is not root refuses the setting at start.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scalablejob.model.errors import ConfigError

RUN_AS_PATH = "$.scalable_job.run_as"


@dataclass(frozen=True)
class JobUser:
    """Who a job runs as: what Popen's `user`, `group` and `extra_groups` take, and the login environment."""

    name: str
    uid: int
    gid: int
    home: str

    def env(self) -> dict[str, str]:
        """HOME, USER and LOGNAME of the job's user, not the worker's (tools write caches and configs there)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def job_user(spec: str | None) -> JobUser | None:
    """The user of `run_as` ("user" or "user:group", names or numbers); None runs jobs as the worker's own user. A
    user or group unknown here, or a switch this process may not make, is a ConfigError naming the setting."""
    if spec is None:
        return None
    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(RUN_AS_PATH, f"expected a user of this host, got {user!r} (no such user)") from None
    gid = entry.pw_gid if not group else _group_id(group)
    if os.geteuid() != 0 and (entry.pw_uid, gid) != (os.geteuid(), os.getegid()):
        raise ConfigError(
            RUN_AS_PATH,
            f"the worker runs as uid {os.geteuid()} and may not start jobs as {spec!r}: run the worker as root, or "
            "drop the setting",
        )
    return JobUser(entry.pw_name, entry.pw_uid, gid, entry.pw_dir)


def _group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(RUN_AS_PATH, f"expected a group of this host, got {group!r} (no such group)") from None


def as_user(user: JobUser | None, env: Mapping[str, str]) -> dict[str, Any]:
    """Popen's keyword arguments that start a process as `user` with `env` (and the user's login variables); as
    this process's own user when None. Root also drops its supplementary groups (only root may set them)."""
    if user is None:
        return {"env": dict(env)}
    switch: dict[str, Any] = {"user": user.uid, "group": user.gid}
    if os.geteuid() == 0:
        switch["extra_groups"] = []
    return {"env": {**env, **user.env()}, **switch}
