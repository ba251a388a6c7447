"""`scalablejob scaler` on the command line: GPU problems and bad user code are clear errors before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import service_config
from scalablejob.cli.main import main
from scalablejob.host.gpus import NvmlInventory
from scalablejob.model.errors import GpuError

UNREACHABLE = "redis://127.0.0.1:1/0"  # never contacted: the GPU and --app checks come first


def config_file(tmp_path: Path, gpu: int) -> str:
    path = tmp_path / "svc.json"
    path.write_text(json.dumps(service_config("svc", gpu=gpu)))
    return str(path)


def has_nvidia_driver() -> bool:
    try:
        NvmlInventory().gpus()
    except GpuError:
        return False
    return True


@pytest.mark.skipif(has_nvidia_driver(), reason="this machine has an NVIDIA driver")
def test_gpu_workers_without_an_nvidia_driver_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["scaler", config_file(tmp_path, 1), "--broker", UNREACHABLE])

    assert result.exit_code == 1
    assert "cannot list GPUs" in result.output and "expected an NVIDIA driver" in result.output
    assert "metadata.gpu 0 for CPU workers" in result.output


def test_more_gpus_per_worker_than_the_machine_has_names_the_field(tmp_path: Path) -> None:
    args = ["scaler", config_file(tmp_path, 2), "--broker", UNREACHABLE, "--fake-gpus", "1"]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 1
    assert "metadata.gpu is 2: expected at most the 1 GPU(s) this machine makes visible" in result.output


def test_the_scaler_command_documents_its_options() -> None:
    result = CliRunner().invoke(main, ["scaler", "--help"])
    assert result.exit_code == 0
    for option in ("--app", "--broker", "--interval", "--metrics-port", "--log-dir", "--fake-gpus"):
        assert option in result.output


def test_an_app_that_does_not_load_is_one_clear_error_before_any_worker_starts(tmp_path: Path) -> None:
    # given user code that cannot be imported
    bad = tmp_path / "bad.py"
    bad.write_text("import no_such_module_for_scalablejob\n")

    # when the standalone scaler is started with it (the broker is never reached: the check comes first)
    result = CliRunner().invoke(main, ["scaler", config_file(tmp_path, 0), "--app", str(bad), "--broker", UNREACHABLE])

    # then it exits non-zero with the import error, as `up` does, instead of spawning workers that keep dying
    assert result.exit_code == 1
    assert f"--app {bad}: could not import it: ModuleNotFoundError" in result.output
    assert "no_such_module_for_scalablejob" in result.output
