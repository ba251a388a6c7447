"""What importing the package costs: a training script's `import scalablejob.progress` loads no Celery or kombu,
and the package's public names still come from `import scalablejob`, loaded on first use."""

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


def test_importing_progress_loads_neither_celery_nor_kombu_nor_redis() -> None:
    loaded = modules_loaded_by("scalablejob.progress")
    assert "scalablejob.progress" in loaded
    heavy = [name for name in loaded if name.split(".")[0] in ("celery", "kombu", "redis")]
    assert heavy == []


def test_the_public_names_load_on_first_use() -> None:
    for name in scalablejob.__all__:
        assert getattr(scalablejob, name).__name__ == name
    assert "celery" in modules_loaded_by("scalablejob; scalablejob.JobClient")  # the client is a Celery producer


def test_an_unknown_name_is_an_attribute_error_that_names_it() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Jobb'"):
        scalablejob.Jobb  # noqa: B018
