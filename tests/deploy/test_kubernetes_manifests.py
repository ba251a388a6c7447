"""deploy/kubernetes/ without a cluster: every object validates against the Kubernetes 1.33 schemas
(kubernetes-validate, strict: an unknown field is an error), and the manifests agree with each other and with the
project: the RBAC verbs are the scaler's, the service JSON and user code load with the project's loaders, the worker
pod's grace period covers a task's timeout and cancel grace, every selector picks the pods it is meant for, and every
file, secret and config key a pod names exists."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from kube_objects import Manifests, PodSpecOf, env_refs, load_documents, mounted_files, pod_of, selects, workload_pods
from kubernetes_validate import utils as kubernetes_validate

from conftest import REPO
from scalablejob.api.user_code import load_job
from scalablejob.cli.frontend import TOKEN_ENV
from scalablejob.cli.main import main
from scalablejob.model.config import ServiceConfig, load_config
from scalablejob.store.broker import BROKER_ENV

DEPLOY = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"
NAMESPACE = "scalablejob"
# What the scaler's Kubernetes pool calls on the core/v1 pod API (issue 25): the Role must grant exactly these.
# TODO(kpool): import the pool's own constant once that branch is merged, so that the two cannot drift.
SCALER_POD_VERBS = {"get", "list", "watch", "create", "delete", "patch"}
EXAMPLE_LABEL = "scalablejob.io/example"  # on the objects with placeholder values
WORKER_POD_CONFIGMAP = "scalablejob-worker-pod"
WORKER_TEMPLATES = ("worker-pod.yaml", "worker-pod-gpu.yaml")
GPU_RESOURCE = "nvidia.com/gpu"
# What the GPU template may set beyond the CPU one: the GPU itself and how it lands on a GPU node
GPU_ONLY_FIELDS = ("nodeSelector", "tolerations", "affinity")
# The labels the scaler adds to every worker pod it makes from the template (which keeps the template's own).
# The pool's own function (scalablejob.scaler.pod_template.labels) is checked against them once it is there.
SCALER_WORKER_LABELS = {"scalablejob.io/service": "{service}", "scalablejob.io/role": "worker"}
# The namespace enforces the restricted Pod Security Standard: a pod that breaks it is refused at creation (a worker
# pod too, when the scaler creates it). What it allows, from the standard's text (kubernetes.io, "Pod Security
# Standards", Restricted):
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
RESTRICTED_SECCOMP = {"RuntimeDefault", "Localhost"}
RESTRICTED_ADDED_CAPABILITIES = {"NET_BIND_SERVICE"}
REDIS_CLIENTS = {"Deployment/scalablejob-scaler", "Deployment/scalablejob-frontend", *WORKER_TEMPLATES}


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests.read(DEPLOY)


@pytest.fixture(scope="module")
def worker_templates(manifests: Manifests) -> dict[str, dict]:
    data = manifests.config_data(WORKER_POD_CONFIGMAP)
    return {key: yaml.safe_load(data[key]) for key in WORKER_TEMPLATES}


@pytest.fixture(scope="module")
def pods(manifests: Manifests, worker_templates: dict[str, dict], config: ServiceConfig) -> list[PodSpecOf]:
    """Every kind of pod the manifests make: the workloads' and the worker pods the scaler makes from each template
    (with the labels it adds)."""
    workers = [pod_of(key, pod) for key, pod in worker_templates.items()]
    added = _scaler_labels(config)
    return workload_pods(manifests) + [PodSpecOf(pod.source, {**pod.labels, **added}, pod.spec) for pod in workers]


def _scaler_labels(config: ServiceConfig) -> dict[str, str]:
    return {key: value.format(service=config.name) for key, value in SCALER_WORKER_LABELS.items()}


@pytest.fixture(scope="module")
def config(manifests: Manifests, tmp_path_factory: pytest.TempPathFactory) -> ServiceConfig:
    """The service JSON of the ConfigMap, read as the pods read it: a file, through the project's loader."""
    path = tmp_path_factory.mktemp("config") / "service.json"
    path.write_text(manifests.config_data("scalablejob-config")["service.json"], encoding="utf-8")
    return load_config(path)


def validation_errors(obj: dict, where: str) -> list[str]:
    """Why `obj` does not validate against Kubernetes' schema (strict); a kind with no schema is an error too."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(step) for step in exc.path)
        return [f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')} at {path or '.'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


def test_the_installed_validator_knows_the_kubernetes_version():
    """kubernetes-validate falls back to an older schema silently: the version we claim must be one it ships."""
    assert f"{KUBERNETES_VERSION}.0" in kubernetes_validate.all_versions()


def test_every_file_has_objects_and_every_object_validates_strictly(manifests, worker_templates):
    files = sorted(DEPLOY.glob("*.yaml"))
    assert files, f"no manifests in {DEPLOY}"
    empty = [path.name for path in files if not load_documents(path)]
    errors = [err for path in files for doc in load_documents(path) for err in validation_errors(doc, path.name)]
    errors += [err for key, pod in worker_templates.items() for err in validation_errors(pod, key)]

    assert not empty, f"files with no object: {empty}"
    assert not errors, "\n".join(errors)


def test_every_object_is_in_the_namespace(manifests):
    namespaces = [obj["metadata"]["name"] for obj in manifests.of_kind("Namespace")]
    outside = [
        f"{obj['kind']}/{obj['metadata']['name']}" for obj in manifests.objects
        if obj["kind"] != "Namespace" and obj["metadata"].get("namespace") != NAMESPACE
    ]  # fmt: skip

    assert namespaces == [NAMESPACE]
    assert not outside, f"objects not in namespace {NAMESPACE}: {outside}"


def test_the_role_grants_exactly_the_pod_verbs_the_scaler_uses_to_the_scalers_account(manifests):
    role = manifests.get("Role", "scalablejob-scaler")
    binding = manifests.get("RoleBinding", "scalablejob-scaler")
    scaler = manifests.get("Deployment", "scalablejob-scaler")["spec"]["template"]["spec"]

    assert [(rule["apiGroups"], rule["resources"], set(rule["verbs"])) for rule in role["rules"]] == [
        ([""], ["pods"], SCALER_POD_VERBS)
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scalablejob-scaler"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": scaler["serviceAccountName"]}]
    manifests.get("ServiceAccount", scaler["serviceAccountName"])
    assert not manifests.of_kind("ClusterRole") and not manifests.of_kind("ClusterRoleBinding")


def test_only_the_scaler_gets_an_api_token(manifests, pods):
    with_token = [pod.source for pod in pods if pod.spec.get("automountServiceAccountToken", True)]

    assert with_token == ["Deployment/scalablejob-scaler"]


def test_every_pod_meets_the_restricted_pod_security_standard_the_namespace_enforces(manifests, pods):
    namespace = manifests.get("Namespace", NAMESPACE)["metadata"]["labels"]
    breaches = [f"{pod.source}: {breach}" for pod in pods for breach in _restricted_breaches(pod)]

    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not breaches


def _restricted_breaches(pod: PodSpecOf) -> list[str]:
    spec, pod_context = pod.spec, pod.spec.get("securityContext", {})
    breaches = [
        f"volume {v['name']}" for v in spec.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUME_TYPES
    ]
    breaches += [f"spec.{field}" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    for container in pod.containers():
        context = container.get("securityContext", {})
        merged = {**pod_context, **context}
        capabilities = context.get("capabilities", {})
        breaches += [
            f"{container['name']}: {what}" for what, broken in (
                ("runAsNonRoot", merged.get("runAsNonRoot") is not True or merged.get("runAsUser") == 0),
                ("seccompProfile", merged.get("seccompProfile", {}).get("type") not in RESTRICTED_SECCOMP),
                ("allowPrivilegeEscalation", context.get("allowPrivilegeEscalation") is not False),
                ("privileged", context.get("privileged", False)),
                ("capabilities.drop ALL", "ALL" not in capabilities.get("drop", [])),
                ("capabilities.add", not set(capabilities.get("add", [])) <= RESTRICTED_ADDED_CAPABILITIES),
                ("hostPort", any("hostPort" in port for port in container.get("ports", []))),
            ) if broken
        ]  # fmt: skip
    return breaches


def test_the_service_json_and_user_code_load_with_the_projects_loaders(manifests, config, tmp_path, monkeypatch):
    handlers = tmp_path / "handlers.py"
    handlers.write_text(manifests.config_data("scalablejob-config")["handlers.py"], encoding="utf-8")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    monkeypatch.chdir(tmp_path)

    job = load_job(str(handlers), config.name)

    assert job.service in (None, config.name)


def test_the_user_code_is_the_example_handlers_module(manifests):
    """One copy to keep: examples/handlers.py, which the quickstart and the README tour run."""
    code = manifests.config_data("scalablejob-config")["handlers.py"]

    assert code == (REPO / "examples" / "handlers.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("key", WORKER_TEMPLATES)
def test_the_worker_pods_grace_period_covers_the_task_timeout_and_cancel_grace(worker_templates, config, key):
    timeout = config.scalable_job.task_timeout_s
    assert timeout is not None, "the example sets scalable_job.task_timeout_seconds: a worker's grace must cover it"

    grace = worker_templates[key]["spec"]["terminationGracePeriodSeconds"]

    assert grace >= timeout + config.scalable_job.cancel_grace_s


def test_the_worker_templates_pass_the_scalers_own_check_and_make_valid_pods(worker_templates, config):
    """What the scaler checks at start and sends for each worker, once its pool is there: no error, and a pod that
    validates strictly too."""
    pod_template = pytest.importorskip("scalablejob.scaler.pod_template", reason="TODO(kpool): the pod pool")
    for key, pod in worker_templates.items():
        gpus = int(pod["spec"]["containers"][0]["resources"]["limits"].get(GPU_RESOURCE, 0))  # its metadata.gpu
        template = pod_template.check_template(
            pod, key, service=config.name, gpu_per_worker=gpus, settings=config.scalable_job
        )
        worker = pod_template.worker_pod(template, pod_name="inference-0123abcd", worker_name="w", service=config.name)

        assert not validation_errors(worker, key)
    assert pod_template.labels(config.name) == _scaler_labels(config)


def test_the_cpu_worker_asks_for_the_configs_gpus_and_the_gpu_one_differs_only_in_gpus(worker_templates, config):
    cpu, gpu = (worker_templates[key] for key in WORKER_TEMPLATES)
    cpu_limits = cpu["spec"]["containers"][0]["resources"]["limits"]
    gpu_limits = gpu["spec"]["containers"][0]["resources"]["limits"]

    assert int(cpu_limits.get(GPU_RESOURCE, 0)) == config.metadata.gpu == 0
    assert int(gpu_limits[GPU_RESOURCE]) >= 1
    assert _without_gpus(cpu) == _without_gpus(gpu)


def _without_gpus(pod: dict) -> dict:
    pod = json.loads(json.dumps(pod))
    for field in GPU_ONLY_FIELDS:
        pod["spec"].pop(field, None)
    for limits in (pod["spec"]["containers"][0]["resources"][part] for part in ("limits", "requests")):
        limits.pop(GPU_RESOURCE, None)
    return pod


def test_every_container_sets_cpu_and_memory_requests_and_limits(manifests, pods):
    missing = [
        f"{pod.source}/{container['name']}: {part}.{resource}"
        for pod in pods for container in pod.containers() for part in ("requests", "limits")
        for resource in ("cpu", "memory") if resource not in container.get("resources", {}).get(part, {})
    ]  # fmt: skip

    assert not missing


def test_the_worker_pod_runs_scalablejob_worker_on_the_files_it_mounts(manifests, worker_templates, config):
    for key, template in worker_templates.items():
        pod = pod_of(key, template)
        command = _command(pod.first_container)
        files = mounted_files(manifests, pod, pod.first_container)

        assert command[:2] == ["scalablejob", "worker"], key
        assert json.loads(files[command[2]])["metadata"]["name"] == config.name, key
        assert command[command.index("--app") + 1] in files, key


def test_the_scaler_runs_the_kubernetes_pool_on_a_mounted_worker_template(manifests, worker_templates):
    pod = _workload(manifests, "Deployment/scalablejob-scaler")
    command = _command(pod.first_container)
    files = mounted_files(manifests, pod, pod.first_container)

    assert command[:2] == ["scalablejob", "scaler"]
    assert "--kubernetes" in command
    assert files[command[2]] == manifests.config_data("scalablejob-config")["service.json"]
    assert yaml.safe_load(files[command[command.index("--worker-pod") + 1]]) == worker_templates[WORKER_TEMPLATES[0]]


def test_the_front_end_listens_on_the_port_its_service_targets(manifests):
    pod = _workload(manifests, "Deployment/scalablejob-frontend")
    command = _command(pod.first_container)
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
    program, name, *args = [_expanded(arg, container) for arg in _command(container)]
    command = main.commands[name]
    if name == "scaler" and not any(option.name == "kubernetes" for option in command.params):
        pytest.skip("TODO(kpool): `scalablejob scaler --kubernetes` comes with the kpool branch")

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
    ours = [pod for pod in pods if _command(pod.first_container)[0] == "scalablejob"]
    broker = {pod.source: _env_source(pod.first_container, BROKER_ENV) for pod in ours}
    token = _env_source(_workload(manifests, "Deployment/scalablejob-frontend").first_container, TOKEN_ENV)
    on_command_lines = [
        f"{pod.source}: {arg}" for pod in pods for container in pod.containers() for arg in _command(container)
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


def test_the_placeholder_secrets_and_only_they_carry_the_label_that_a_real_deployment_leaves_out(manifests):
    """README: `kubectl apply -f deploy/kubernetes/ -l '!scalablejob.io/example'` after creating the secrets."""
    placeholders = {
        obj["metadata"]["name"] for obj in manifests.of_kind("Secret")
        if any("CHANGE-ME" in value for value in obj["stringData"].values())
    }  # fmt: skip
    marked = {
        obj["metadata"]["name"] for obj in manifests.objects if EXAMPLE_LABEL in obj["metadata"].get("labels", {})
    }

    assert placeholders == marked == {"scalablejob-broker", "scalablejob-frontend"}


def test_the_example_broker_url_carries_the_redis_password(manifests):
    secret = manifests.get("Secret", "scalablejob-broker")["stringData"]

    assert f":{secret['redis-password']}@scalablejob-redis:6379/" in secret["broker-url"]


def test_redis_keeps_its_append_only_file_on_a_claimed_volume(manifests):
    redis = manifests.get("StatefulSet", "scalablejob-redis")
    conf = manifests.config_data("scalablejob-redis")["redis.conf"].splitlines()
    claims = [claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]]
    mounts = {
        mount["name"]: mount["mountPath"]
        for mount in redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }

    assert "appendonly yes" in conf
    assert f"dir {mounts[claims[0]]}" in conf
    assert redis["spec"]["replicas"] == 1


def test_each_workload_and_service_selects_its_own_pods(manifests, pods):
    for kind in ("Deployment", "StatefulSet"):
        for obj in manifests.of_kind(kind):
            source = f"{kind}/{obj['metadata']['name']}"
            assert [pod.source for pod in pods if selects(obj["spec"]["selector"], pod.labels)] == [source]
    for service in manifests.of_kind("Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        assert len([pod for pod in pods if selects(selector, pod.labels)]) == 1, service["metadata"]["name"]


def test_only_the_scaler_front_end_and_workers_may_reach_redis(manifests, pods):
    redis = next(pod for pod in pods if pod.source == "StatefulSet/scalablejob-redis")
    policies = [
        p["spec"] for p in manifests.of_kind("NetworkPolicy") if selects(p["spec"]["podSelector"], redis.labels)
    ]
    peers = [peer for policy in policies for rule in policy.get("ingress", []) for peer in rule.get("from", [])]
    open_rules = [rule for policy in policies for rule in policy.get("ingress", []) if "from" not in rule]
    allowed = {pod.source for peer in peers for pod in pods if selects(peer["podSelector"], pod.labels)}

    assert policies and all(policy["policyTypes"] == ["Ingress"] for policy in policies)
    assert not open_rules, "a rule without `from` lets anyone in"
    assert all(set(peer) == {"podSelector"} for peer in peers), "pods of this namespace only"
    assert allowed == REDIS_CLIENTS


def test_nothing_else_takes_connections_but_the_front_ends_port(manifests, pods):
    deny = manifests.get("NetworkPolicy", "scalablejob-default-deny-ingress")["spec"]
    reachable = {
        pod.source for policy in manifests.of_kind("NetworkPolicy") for pod in pods
        if policy["spec"].get("ingress") and selects(policy["spec"]["podSelector"], pod.labels)
    }  # fmt: skip

    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert reachable == {"StatefulSet/scalablejob-redis", "Deployment/scalablejob-frontend"}


def test_the_worker_budget_covers_the_workers_only_and_allows_no_eviction(manifests, pods, config):
    budget = manifests.get("PodDisruptionBudget", "scalablejob-worker")["spec"]

    assert {pod.source for pod in pods if selects(budget["selector"], pod.labels)} == set(WORKER_TEMPLATES)
    # Bare pods (no owner with a scale) take only an integer minAvailable; more than `max` keeps the disruptions
    # allowed at 0 however many workers run.
    assert "maxUnavailable" not in budget
    assert isinstance(budget["minAvailable"], int) and budget["minAvailable"] > config.autoscaler.max


def test_each_budget_covers_the_pods_of_one_part(manifests, pods):
    covered = {
        budget["metadata"]["name"]: {pod.source for pod in pods if selects(budget["spec"]["selector"], pod.labels)}
        for budget in manifests.of_kind("PodDisruptionBudget")
    }  # fmt: skip

    assert covered == {
        "scalablejob-worker": set(WORKER_TEMPLATES),
        "scalablejob-scaler": {"Deployment/scalablejob-scaler"},
        "scalablejob-frontend": {"Deployment/scalablejob-frontend"},
    }


def _workload(manifests: Manifests, source: str) -> PodSpecOf:
    return next(pod for pod in workload_pods(manifests) if pod.source == source)


def _command(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _env_source(container: dict, name: str) -> tuple[str, str, str] | None:
    refs = [(kind, obj, key) for env, kind, obj, key in env_refs(container) if env == name]
    return refs[0] if refs else None
