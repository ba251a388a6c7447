"""The one loader of the Lua scripts: each lives as a .lua file beside the module that owns its Redis structure."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua_script(name: str) -> str:
    """The text of `scalablejob/<name>` (package data), registered as is by redis and redis.asyncio clients alike."""
    return files("scalablejob").joinpath(name).read_text(encoding="utf-8")
