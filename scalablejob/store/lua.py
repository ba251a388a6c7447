"""The one loader of the Lua scripts: the store's live in scalablejob/store/lua/, a component's beside its module."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua_script(name: str, package: str | None = None) -> str:
    """The text of the script `name` of `package` (package data; by default the store's lua/ folder), registered as
    is by redis and redis.asyncio clients alike."""
    folder = files(package) if package else files("scalablejob.store").joinpath("lua")
    return folder.joinpath(name).read_text(encoding="utf-8")
