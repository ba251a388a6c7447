"""The one loader of the Lua scripts: each lives as a .lua file beside the module that owns its Redis structure."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua_script(name: str, package: str = "scalablejob") -> str:
    """The text of the script `name` of `package` (package data), registered as is by redis and redis.asyncio
    clients alike."""
    return files(package).joinpath(name).read_text(encoding="utf-8")
