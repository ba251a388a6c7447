"""deploy/kubernetes/: each pod's command line is one the project's CLI takes, on files its pod mounts, with the
secrets it needs in its environment and none on a command line."""

from __future__ import annotations

import json

import pytest
import yaml
from deploy_facts import NAMESPACE, WORKER_TEMPLATES
from kube_objects import command_of, env_refs, env_source, mounted_files, pod_named, pod_of

from scalablejob.cli.frontend import TOKEN_ENV
from scalablejob.cli.main import main
from scalablejob.store.broker import BROKER_ENV

pytest_plugins = ["deploy_fixtures"]


def test_the_worker_pod_runs_scalablejob_worker_on_the_files_it_mounts(manifests, worker_templates, config):
    for key, template in worker_templates.items():
        pod = pod_of(key, template)
        command = command_of(pod.first_container)
        files = mounted_files(manifests, pod, pod.first_container)

        assert command[:2] == ["scalablejob", "worker"], key
        assert json.loads(files[command[2]])["metadata"]["name"] == config.name, key
        assert command[command.index("--app") + 1] in files, key


def test_the_scaler_runs_the_kubernetes_pool_on_a_mounted_worker_template(manifests, pods, worker_templates):
    pod = pod_named(pods, "Deployment/scalablejob-scaler")
    command = command_of(pod.first_container)
    files = mounted_files(manifests, pod, pod.first_container)

    assert command[:2] == ["scalablejob", "scaler"]
    assert "--kubernetes" in command
    assert files[command[2]] == manifests.config_data("scalablejob-config")["service.json"]
    assert yaml.safe_load(files[command[command.index("--worker-pod") + 1]]) == worker_templates[WORKER_TEMPLATES[0]]


def test_the_front_end_listens_on_the_port_its_service_targets(manifests, pods):
    pod = pod_named(pods, "Deployment/scalablejob-frontend")
    command = command_of(pod.first_container)
    service = manifests.get("Service", "scalablejob-frontend")
    ports = {port["name"]: port["containerPort"] for port in pod.first_container["ports"]}

    assert command[:2] == ["scalablejob", "frontend"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert [ports[port["targetPort"]] for port in service["spec"]["ports"]] == [
        int(command[command.index("--port") + 1])
    ]


@pytest.mark.parametrize(
    "source", ["Deployment/scalablejob-scaler", "Deployment/scalablejob-frontend", *WORKER_TEMPLATES]
)
def test_the_command_line_parses_with_the_projects_cli(manifests, pods, tmp_path, source):
    """Each option a manifest gives exists, with a valid value, and each file it names is one its pod mounts:
    the command's own parser runs on the arguments, the mounted files written out where the pod would see them."""
    pod = next(pod for pod in pods if pod.source == source)
    container = pod.first_container
    local = {}
    for path, text in mounted_files(manifests, pod, container).items():
        local[path] = tmp_path / path.lstrip("/")
        local[path].parent.mkdir(parents=True, exist_ok=True)
        local[path].write_text(text, encoding="utf-8")
    program, name, *args = [_expanded(arg, container) for arg in command_of(container)]
    command = main.commands[name]

    with command.make_context(name, [str(local.get(arg, arg)) for arg in args]) as context:
        given = {
            param.name for param in command.params if context.get_parameter_source(param.name).name == "COMMANDLINE"
        }

    assert program == "scalablejob"
    assert given  # the parse ran on our arguments
    assert all(arg in local for arg in args if arg.startswith("/")), "a path the pod does not mount"


def _expanded(arg: str, container: dict) -> str:
    """An argument as the kubelet hands it over: $(VAR) replaced by the container's variable (the namespace for a
    fieldRef of metadata.namespace)."""
    for entry in container.get("env", []):
        field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        value = NAMESPACE if field == "metadata.namespace" else entry.get("value")
        if value is not None:
            arg = arg.replace(f"$({entry['name']})", value)
    return arg


def test_secrets_reach_every_part_through_the_environment_and_never_a_command_line(manifests, pods):
    ours = [pod for pod in pods if command_of(pod.first_container)[0] == "scalablejob"]
    broker = {pod.source: env_source(pod.first_container, BROKER_ENV) for pod in ours}
    token = env_source(pod_named(pods, "Deployment/scalablejob-frontend").first_container, TOKEN_ENV)
    on_command_lines = [
        f"{pod.source}: {arg}" for pod in pods for container in pod.containers() for arg in command_of(container)
        if "redis://" in arg or arg.startswith(("--broker", "--token", "--requirepass"))
    ]  # fmt: skip

    assert len(ours) == 4  # the scaler, the front end and the two worker templates
    assert set(broker.values()) == {("Secret", "scalablejob-broker", "broker-url")}
    assert token == ("Secret", "scalablejob-frontend", "token")
    assert not on_command_lines


def test_every_secret_and_config_key_a_pod_names_exists(manifests, pods):
    missing = [
        f"{pod.source}: {env} from {kind} {name} key {key}"
        for pod in pods for container in pod.containers() for env, kind, name, key in env_refs(container)
        if key not in (manifests.secret_keys(name) if kind == "Secret" else set(manifests.config_data(name)))
    ]  # fmt: skip

    assert not missing
