"""Loading the --app module: file and MODULE[:ATTRIBUTE] forms, and one clear error for each way it can go wrong."""

from __future__ import annotations

import contextlib
import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scalablejob.api.job import Job
from scalablejob.api.user_code import load_job, load_task, module_spec
from scalablejob.model.errors import UserCodeError

SERVICE = "svc"
WriteModule = Callable[[str], str]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Write a module with a fresh name into the current directory (tmp_path) and return its name.

    sys.path and sys.modules are as they were after the test.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_job adds the current directory to it
    names: list[str] = []

    def write(source: str) -> str:
        name = f"sj_user_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


ONE_JOB = """
from scalablejob import Job
job = Job("svc")
"""


@pytest.mark.parametrize("form", ["{name}.py", "{name}", "{name}:job", "{name}.py:job"])
def test_load_job_finds_the_job_in_each_form(write_module: WriteModule, form: str) -> None:
    name = write_module(ONE_JOB)

    job = load_job(form.format(name=name), SERVICE)

    module_name = f"scalablejob_app_{name}" if ".py" in form else name  # files load under a private name
    assert job is sys.modules[module_name].job
    assert job.service == SERVICE


def test_load_job_accepts_a_job_for_any_service(write_module: WriteModule) -> None:
    name = write_module("from scalablejob import Job\nanything = Job()\n")

    assert load_job(name, SERVICE) is sys.modules[name].anything


def test_load_job_keeps_the_handler_the_module_registered(write_module: WriteModule) -> None:
    name = write_module(ONE_JOB + "\n@job.query\ndef answer(body):\n    return body\n")

    job = load_job(f"{name}.py", SERVICE)

    assert job.query_handler is not None
    assert job.query_handler.__name__ == "answer"


def test_load_job_ignores_a_job_for_another_service(write_module: WriteModule) -> None:
    name = write_module('from scalablejob import Job\nother = Job("other")\nmine = Job("svc")\n')

    assert load_job(name, SERVICE) is sys.modules[name].mine


def test_load_job_with_an_attribute_picks_that_job(write_module: WriteModule) -> None:
    name = write_module('from scalablejob import Job\nfirst = Job("svc")\nsecond = Job("svc")\n')

    assert load_job(f"{name}:second", SERVICE) is sys.modules[name].second


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("x = 1\n", "found none"),
        ('from scalablejob import Job\nother = Job("other")\n', "found Job(service='other')"),
    ],
    ids=["no-job", "only-another-service"],
)
def test_load_job_without_a_job_for_the_service_raises(write_module: WriteModule, source: str, found: str) -> None:
    name = write_module(source)

    with pytest.raises(UserCodeError) as caught:
        load_job(name, SERVICE)

    message = str(caught.value)
    assert f"--app {name}: expected exactly one scalablejob.Job for service 'svc'" in message
    assert found in message


def test_load_job_with_two_jobs_asks_for_module_attribute(write_module: WriteModule) -> None:
    name = write_module('from scalablejob import Job\na = Job("svc")\nb = Job()\n')

    with pytest.raises(UserCodeError) as caught:
        load_job(name, SERVICE)

    message = str(caught.value)
    assert "found Job(service='svc'), Job(service=None)" in message
    assert message.endswith("name one as MODULE:ATTRIBUTE")


@pytest.mark.parametrize(
    ("attribute", "type_name"),
    [("handler", "function"), ("number", "int")],
)
def test_load_job_with_an_attribute_that_is_not_a_job_raises(
    write_module: WriteModule, attribute: str, type_name: str
) -> None:
    name = write_module(ONE_JOB + "number = 3\ndef handler(body):\n    return body\n")

    with pytest.raises(UserCodeError) as caught:
        load_job(f"{name}:{attribute}", SERVICE)

    assert str(caught.value) == (
        f"--app {name}:{attribute}: expected {attribute} to be a scalablejob.Job, got {type_name}"
    )


def test_load_job_with_a_missing_attribute_names_it(write_module: WriteModule) -> None:
    name = write_module(ONE_JOB)

    with pytest.raises(UserCodeError) as caught:
        load_job(f"{name}:missing", SERVICE)

    assert str(caught.value) == f"--app {name}:missing: module {name} has no attribute 'missing'"


def test_load_job_with_an_attribute_naming_another_services_job_raises(write_module: WriteModule) -> None:
    name = write_module('from scalablejob import Job\nother = Job("other")\n')

    with pytest.raises(UserCodeError, match="found Job\\(service='other'\\)"):
        load_job(f"{name}:other", SERVICE)


@pytest.mark.parametrize("suffix", [".py", ""])
@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("1 / 0\n", "ZeroDivisionError: division by zero"),
        ("import sj_no_such_module_anywhere\n", "ModuleNotFoundError: No module named 'sj_no_such_module_anywhere'"),
        ("def broken(:\n", "SyntaxError: "),
    ],
    ids=["raises", "imports-missing", "syntax"],
)
def test_load_job_names_the_module_and_the_exception_when_import_fails(
    write_module: WriteModule, suffix: str, source: str, error: str
) -> None:
    name = write_module(source)

    with pytest.raises(UserCodeError) as caught:
        load_job(f"{name}{suffix}", SERVICE)

    assert str(caught.value).startswith(f"--app {name}{suffix}: could not import it: {error}")


@pytest.mark.parametrize("spec", ["sj_no_such_module_anywhere", "sj_no_such_module_anywhere:job"])
def test_load_job_of_a_missing_module_raises_naming_it(write_module: WriteModule, spec: str) -> None:
    with pytest.raises(UserCodeError, match="--app sj_no_such_module_anywhere: could not import it: ModuleNotFound"):
        load_job(spec, SERVICE)


def test_load_job_of_a_missing_file_raises_naming_it(write_module: WriteModule) -> None:
    with pytest.raises(UserCodeError, match=r"--app missing_handlers\.py: no such file"):
        load_job("missing_handlers.py", SERVICE)


def test_load_job_finds_a_module_in_a_package_under_the_current_directory(
    write_module: WriteModule, tmp_path: Path
) -> None:
    package = f"sj_pkg_{uuid.uuid4().hex[:12]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "handlers.py").write_text(ONE_JOB)
    importlib.invalidate_caches()
    try:
        job = load_job(f"{package}.handlers", SERVICE)

        assert isinstance(job, Job)
        assert job is sys.modules[f"{package}.handlers"].job
    finally:
        sys.modules.pop(f"{package}.handlers", None)
        sys.modules.pop(package, None)


def test_a_file_that_fails_to_import_leaves_no_module_behind(write_module: WriteModule) -> None:
    name = write_module("1 / 0\n")

    with pytest.raises(UserCodeError):
        load_job(f"{name}.py", SERVICE)

    assert name not in sys.modules


def test_a_file_named_like_an_imported_module_does_not_replace_it(
    write_module: WriteModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a user file whose name is that of a module the worker has imported (as proj/celery.py would be)
    import colorsys

    monkeypatch.setitem(sys.modules, "colorsys", colorsys)  # put back after the test, whatever happens
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "colorsys.py").write_text(ONE_JOB)

    # when it is loaded in file form (or refused)
    with contextlib.suppress(UserCodeError):
        load_job("proj/colorsys.py", SERVICE)

    # then the imported module is still the one every other import sees
    assert sys.modules["colorsys"] is colorsys


# ---- a named task, as a training task's child process finds it ---------------------------------------------------

TASKS = """
from scalablejob import Job
job = Job("svc")

@job.task(name="train", task_type="command")
def fit(body):
    return {"fitted": body.decode()}

def evaluate(body):
    return body

job.task(name="evaluate", task_type="command")(evaluate)
"""


@pytest.mark.parametrize("task", ["train", "evaluate"])
def test_load_task_finds_a_task_by_its_name_in_a_module_or_a_file(write_module: WriteModule, task: str) -> None:
    name = write_module(TASKS)

    by_name, by_file = load_task(name, task), load_task(f"{name}.py", task)

    assert by_name is sys.modules[name].job.tasks[task]
    assert by_file.name == task and by_file is not by_name  # the file loads as a module of its own


def test_load_task_of_a_name_the_module_lacks_says_where_tasks_must_be(write_module: WriteModule) -> None:
    name = write_module(TASKS)

    with pytest.raises(UserCodeError, match=rf"module {name} has no task 'tran' at its top level"):
        load_task(name, "tran")


def test_module_spec_names_a_module_by_name_and_a_file_loaded_one_by_its_file(write_module: WriteModule) -> None:
    name = write_module(TASKS)
    load_task(name, "train")
    from_file = load_job(f"{name}.py", SERVICE)

    assert module_spec(sys.modules[name].job.tasks["train"].func) == name
    assert module_spec(from_file.tasks["train"].func) == str(Path(f"{name}.py").resolve())
