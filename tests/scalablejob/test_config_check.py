"""`config check` reports every error of a service JSON with its path, not only the first."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import REPO
from scalablejob.cli.main import main
from scalablejob.model.config_check import all_config_errors, path_steps


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", []),
        ("$.metadata.gpu", ["metadata", "gpu"]),
        ('$.metadata["rpc.worker_threads"]', ["metadata", "rpc.worker_threads"]),
        ("$.containers[0].port", ["containers", 0, "port"]),
        ('$.a["q\\"uote"][12]', ["a", 'q"uote', 12]),
    ],
)
def test_path_steps_reads_every_kind_of_step(path, steps):
    assert path_steps(path) == steps


def test_every_error_is_found_once_with_its_path():
    document = {
        "metadata": {"type": "Nope", "gpu": -1, "rpc.worker_threads": 0, "typo": 1},
        "containers": [{"port": "x"}],
        "autoscaler": {"min": 5, "max": 2},
        "extra": True,
    }

    parsed, errors = all_config_errors(document)

    assert parsed is None
    assert sorted(error.path for error in errors) == sorted([
        "$.metadata.name", "$.metadata.type", "$.metadata.gpu", '$.metadata["rpc.worker_threads"]',
        "$.metadata.typo", "$.containers[0].port", "$.autoscaler.min", "$.extra",
    ])  # fmt: skip
    assert document["metadata"]["gpu"] == -1  # the caller's document is left as it was


def test_a_valid_document_parses_with_no_errors():
    parsed, errors = all_config_errors({"metadata": {"name": "ok", "type": "ScalableJob"}})

    assert errors == [] and parsed is not None and parsed.name == "ok"


def test_config_check_cli_lists_every_error_and_exits_1(tmp_path):
    good, bad, broken = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "broken.json"
    good.write_text(json.dumps({"metadata": {"name": "ok", "type": "ScalableJob"}}))
    bad.write_text(json.dumps({"metadata": {"name": "x", "type": "ScalableJob", "gpu": -1, "cpu": "many"}}))
    broken.write_text('{"metadata": ')

    result = CliRunner().invoke(main, ["config", "check", str(good), str(bad), str(broken)])

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"{good}: ok (service ok, ScalableJob, 1 to 10 workers of 0 GPU(s))"
    assert lines[1] == f"{bad}: 2 error(s)"
    assert lines[2] == '  $.metadata.cpu: expected a number > 0, got string "many"'
    assert lines[3] == "  $.metadata.gpu: expected an integer >= 0, got -1"
    assert lines[4:6] == [f"{broken}: 1 error", "  $: expected valid JSON, found an error at line 1 column 14: "
                          "Expecting value"]  # fmt: skip


def test_config_check_of_valid_files_exits_0():
    examples = sorted(str(path) for path in (REPO / "examples").glob("*.json"))
    result = CliRunner().invoke(main, ["config", "check", *examples])

    assert result.exit_code == 0, result.output
