"""`scalablejob scaler --kubernetes` on the command line: wrong flags, a bad template and a missing client library
are one clear error each, before anything starts (no cluster, no broker is contacted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from kube_rig import service, worker_template

from scalablejob.cli.main import main

UNREACHABLE = "redis://127.0.0.1:1/0"


def files(tmp_path: Path, grace_s: int = 25) -> tuple[str, str]:
    config = tmp_path / "svc.json"
    config.write_text(json.dumps(service("svc", min=1, max=2)))
    template = tmp_path / "pod.json"
    template.write_text(json.dumps(worker_template(config, grace_s=grace_s)))
    return str(config), str(template)


def scaler(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["scaler", *args, "--broker", UNREACHABLE])
    return result.exit_code, result.output


def test_process_only_flags_are_refused_with_kubernetes(tmp_path: Path) -> None:
    config, template = files(tmp_path)
    code, output = scaler(config, "--kubernetes", "--worker-pod", template, "--fake-gpus", "2", "--max-local", "1")
    assert code == 2
    assert "--fake-gpus, --max-local: not with --kubernetes" in output


def test_kubernetes_needs_a_worker_pod_and_pod_flags_need_kubernetes(tmp_path: Path) -> None:
    config, template = files(tmp_path)
    assert "--kubernetes needs --worker-pod FILE" in scaler(config, "--kubernetes")[1]
    code, output = scaler(config, "--namespace", "jobs", "--worker-pod", template)
    assert code == 2 and "--namespace, --worker-pod: only with --kubernetes" in output


def test_a_grace_period_shorter_than_a_task_is_refused_naming_the_field(tmp_path: Path) -> None:
    config, template = files(tmp_path, grace_s=10)  # task_timeout_seconds 20 + cancel grace 2
    code, output = scaler(config, "--kubernetes", "--worker-pod", template)
    assert code == 1
    assert "spec.terminationGracePeriodSeconds: expected at least 22" in output


def test_without_the_client_library_it_says_how_to_install_it(tmp_path: Path) -> None:
    config, template = files(tmp_path)
    code = (
        "import sys; sys.modules['kubernetes'] = None; from scalablejob.cli.main import main; "
        f"main(['scaler', {config!r}, '--kubernetes', '--worker-pod', {template!r}, '--broker', {UNREACHABLE!r}])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "pip install 'scalablejob[kubernetes]'" in run.stderr
