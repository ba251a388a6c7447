"""What importing the package costs: `import scalablejob` and a training script's `import scalablejob.progress` load
no Celery, kombu or redis, and the package's public names still come from `import scalablejob`, on first use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import scalablejob

LOADED_MODULES = "import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"


def modules_loaded_by(module: str) -> list[str]:
    """Every module a fresh interpreter holds after importing `module` (only that)."""
    run = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES.format(module=module)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in ("celery", "kombu", "redis")]


@pytest.mark.parametrize("module", ["scalablejob", "scalablejob.progress"])
def test_importing_the_package_or_progress_loads_neither_celery_nor_kombu_nor_redis(module: str) -> None:
    loaded = modules_loaded_by(module)
    assert module in loaded
    assert heavy(loaded) == []


def test_every_public_name_loads_on_first_use_in_a_fresh_interpreter() -> None:
    names = ", ".join(scalablejob.__all__)
    loaded = modules_loaded_by(f"scalablejob; from scalablejob import {names}")
    assert {"scalablejob.api.client", "scalablejob.api.job", "scalablejob.model.errors", "celery"} <= set(loaded)
    assert heavy(modules_loaded_by("scalablejob; scalablejob.ConfigError")) == []  # an error class costs no Celery


def test_an_unknown_name_is_an_attribute_error_that_names_it() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Jobb'"):
        scalablejob.Jobb  # noqa: B018
