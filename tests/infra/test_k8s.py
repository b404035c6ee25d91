"""k8s/: both overlays render with kustomize, pass Kubernetes' schemas, and hold the promised pieces:
hardened non-root containers with limits and probes, HPAs, a PDB, the GPU only in the gpu overlay."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest

from tests.infra.conftest import OVERLAYS, REPO, container, find, pod_spec, run_tool, workloads

# The oldest Kubernetes these manifests claim (autoscaling/v2, policy/v1 PDB) and the newest schema at hand.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NAMESPACE = "digits"
CONFIG_FILES = ("models.config", "batching.config", "monitoring.config")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_kubernetes_schemas_strictly(overlay, rendered):
    for version in K8S_VERSIONS:
        for manifest in rendered[overlay]:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{overlay}: {where} on Kubernetes {version}: {exc}")


def test_kubernetes_validate_cli_accepts_the_rendered_files(rendered, tmp_path):
    import yaml

    paths = []
    for overlay, manifests in rendered.items():
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(manifests))
        paths.append(str(path))
    cli = REPO / ".venv" / "bin" / "kubernetes-validate"
    command = [str(cli)] if cli.is_file() else ["kubernetes-validate"]
    result = run_tool([*command, "--strict", "--quiet", *paths])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_the_whole_product(overlay, rendered):
    kinds = {(m["kind"], m["metadata"]["name"]) for m in rendered[overlay]}
    expected_kinds = [("Namespace", NAMESPACE), ("PersistentVolumeClaim", "models"), ("Job", "trainer"),
                      ("PodDisruptionBudget", "serving")]
    for name in ("serving", "gateway"):
        expected_kinds += [("Deployment", name), ("Service", name), ("HorizontalPodAutoscaler", name)]
    for expected in expected_kinds:
        assert expected in kinds, f"{overlay} lacks {expected[0]}/{expected[1]}"
    for manifest in rendered[overlay]:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_locked_down_and_bounded(overlay, rendered):
    for workload in workloads(rendered[overlay]):
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, workload["metadata"]["name"]
        for box in spec["containers"]:
            where = f"{overlay}: {workload['metadata']['name']}/{box['name']}"
            security = {**spec.get("securityContext", {}), **box.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, f"{where}: runAsNonRoot needs a numeric non-root uid"
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(box.get("resources", {}).get(bound, {})), f"{where}: {bound}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay, rendered, pyproject):
    for workload in workloads(rendered[overlay]):
        for box in pod_spec(workload)["containers"]:
            image, _, tag = box["image"].rpartition(":")
            assert image and re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{box['image']} is not a pinned release"
            if image.startswith("digits-"):
                assert tag == pyproject["project"]["version"], box["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_have_readiness_and_liveness_probes(overlay, rendered):
    for deployment in (m for m in rendered[overlay] if m["kind"] == "Deployment"):
        for box in pod_spec(deployment)["containers"]:
            assert "readinessProbe" in box and "livenessProbe" in box, deployment["metadata"]["name"]


def test_serving_readiness_needs_an_available_version(rendered):
    from client.contract import DEFAULT_MODEL_NAME, REST_PORT

    serving = container(find(rendered["cpu"], "Deployment", "serving"), "serving")
    script = serving["readinessProbe"]["exec"]["command"][-1]
    assert f"/dev/tcp/127.0.0.1/{REST_PORT}" in script and f"/v1/models/{DEFAULT_MODEL_NAME} " in script
    assert '"AVAILABLE"' in script
    assert serving["livenessProbe"]["httpGet"]["path"] == f"/v1/models/{DEFAULT_MODEL_NAME}"
    # Ports open only after the first load: liveness must wait for a startup probe that allows for it.
    startup = serving["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_ages_out_grpc_connections_so_added_replicas_get_requests(overlay, rendered):
    from client.gateway_settings import DEFAULTS

    # A Service balances connections, and a gateway worker keeps one: without a maximum age, replicas the
    # HPA adds get no gRPC calls. TF Serving passes --grpc_channel_arguments (comma separated key=value,
    # integers as int32) to its gRPC server.
    deployment = find(rendered[overlay], "Deployment", "serving")
    serving = container(deployment, "serving")
    values = [arg.partition("=")[2] for arg in serving["args"] if arg.startswith("--grpc_channel_arguments=")]
    assert len(values) == 1, "TF Serving keeps each gRPC connection for as long as the client does"
    arguments = dict(pair.split("=", 1) for pair in values[0].split(","))
    age_s = int(arguments["grpc.max_connection_age_ms"]) / 1000
    assert age_s >= 1, "clients would reconnect all the time"
    # TF Serving ignores SIGTERM and serves on until killed: every connection (gRPC adds up to 10% jitter
    # to the age) and the gateway's last call on it must be done within the pod's grace period.
    grace_s = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert age_s * 1.1 + DEFAULTS["TIMEOUT_S"] <= grace_s


def test_gateway_keeps_accepting_until_its_endpoint_is_gone(rendered):
    from client.gateway_settings import DEFAULTS

    # Kubernetes takes a stopping pod out of the endpoints while it sends SIGTERM, and gunicorn closes its
    # port on SIGTERM: a preStop pause covers the gap, and the longest request still ends in the grace period.
    deployment = find(rendered["cpu"], "Deployment", "gateway")
    command = container(deployment, "gateway")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    pause_s = float(command[1])
    longest_request_s = DEFAULTS["TIMEOUT_S"] * (DEFAULTS["RETRIES"] + 1)
    grace_s = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert 1 <= pause_s and pause_s + longest_request_s <= grace_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_hpas_and_pdb_point_at_real_pods(overlay, rendered):
    manifests = rendered[overlay]
    for name in ("serving", "gateway"):
        deployment = find(manifests, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = find(manifests, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        named_ports = {p["name"] for box in pod_spec(deployment)["containers"] for p in box["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named_ports
        hpa = find(manifests, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = find(manifests, "PodDisruptionBudget", "serving")
    serving_labels = find(manifests, "Deployment", "serving")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= serving_labels.items()
    serving_hpa = find(manifests, "HorizontalPodAutoscaler", "serving")
    assert pdb["spec"]["minAvailable"] < serving_hpa["spec"]["minReplicas"], "drains must stay possible"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_config_map_is_generated_from_serving_config_files(overlay, rendered):
    maps = [m for m in rendered[overlay] if m["kind"] == "ConfigMap"]
    assert len(maps) == 1 and maps[0]["metadata"]["name"].startswith("serving-config-")
    for name in CONFIG_FILES:
        assert maps[0]["data"][name] == (REPO / "serving" / "config" / name).read_text(), name
    volumes = pod_spec(find(rendered[overlay], "Deployment", "serving"))["volumes"]
    assert {"name": "config", "configMap": {"name": maps[0]["metadata"]["name"]}} in volumes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_models_pvc_is_shared_read_write_by_the_trainer_and_read_only_by_serving(overlay, rendered):
    manifests = rendered[overlay]
    assert "ReadWriteMany" in find(manifests, "PersistentVolumeClaim", "models")["spec"]["accessModes"]
    for name, kind, read_only in (("serving", "Deployment", True), ("trainer", "Job", False)):
        workload = find(manifests, kind, name)
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == "models")
        assert volume["persistentVolumeClaim"]["claimName"] == "models"
        mount = next(m for m in container(workload, name)["volumeMounts"] if m["name"] == "models")
        assert mount["mountPath"] == "/models" and mount.get("readOnly", False) is read_only


def test_only_the_gpu_overlay_asks_for_a_gpu(rendered):
    gpu_trainer = find(rendered["gpu"], "Job", "trainer")
    resources = container(gpu_trainer, "trainer")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"].get("nvidia.com/gpu", "1") == "1"
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert toleration in pod_spec(gpu_trainer)["tolerations"]
    # The GPU request is what places the pod on a GPU node. A node label on top (nvidia.com/gpu.present
    # comes from GPU feature discovery only) would keep the Job Pending where the device plugin alone runs.
    assert "nodeSelector" not in pod_spec(gpu_trainer), "the GPU request alone finds a GPU node"
    assert "nodeAffinity" not in pod_spec(gpu_trainer).get("affinity", {}), "the GPU request alone finds one"
    for workload in workloads(rendered["cpu"]):
        assert "nvidia.com/gpu" not in str(workload), workload["metadata"]["name"]
    for name in ("serving", "gateway"):  # serving stays on CPUs in both overlays
        assert "nvidia.com/gpu" not in str(find(rendered["gpu"], "Deployment", name))
    # The trainer image carries CUDA: in the cpu overlay TensorFlow probes no GPU; in the gpu overlay the
    # device plugin exposes the GPU it allocates, and TensorFlow uses what it sees.
    cpu_trainer = container(find(rendered["cpu"], "Job", "trainer"), "trainer")
    assert {"name": "CUDA_VISIBLE_DEVICES", "value": ""} in cpu_trainer["env"]
    gpu_env = {v["name"] for v in container(gpu_trainer, "trainer").get("env", [])}
    assert not gpu_env & {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"}, "the GPU overlay hides its GPU"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_job_runs_a_command_digits_train_accepts(overlay, rendered):
    from trainer.cli import build_parser

    job = find(rendered[overlay], "Job", "trainer")
    assert pod_spec(job)["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    args = build_parser().parse_args(container(job, "trainer")["args"])
    assert args.models_dir == "/models"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_job_does_not_retry_a_usage_error(overlay, rendered):
    # digits-train exits 2 when its arguments are wrong (argparse): a retry cannot help.
    from trainer.cli import build_parser

    with pytest.raises(SystemExit) as usage_error:
        build_parser().parse_args(["train", "--preset", "no-such-preset"])
    job = find(rendered[overlay], "Job", "trainer")
    rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
    fail_on = [rule["onExitCodes"] for rule in rules if rule["action"] == "FailJob" and "onExitCodes" in rule]
    assert any(
        codes["operator"] == "In" and usage_error.value.code in codes["values"]
        and codes.get("containerName") == "trainer"
        for codes in fail_on
    ), f"{overlay}: a usage error (exit {usage_error.value.code}) is retried"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_thread_pools_follow_its_cpu_limit(overlay, rendered):
    # TensorFlow sizes its pools for the node's cores, not the CFS quota: without these, a Job limited to
    # 4 CPUs on a 64-core node runs 64 intra-op threads, throttled. TensorFlow reads both variables when
    # its runtime starts; taken from the limit (downward API), they follow whatever limit an overlay sets.
    trainer = container(find(rendered[overlay], "Job", "trainer"), "trainer")
    limit = trainer["resources"]["limits"]["cpu"]
    assert re.fullmatch(r"[1-9]\d*", str(limit)), f"{overlay}: a CPU limit of whole cores, not {limit!r}"
    env = {variable["name"]: variable for variable in trainer.get("env", [])}
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        assert name in env, f"{overlay}: the trainer's {name} is unset: one thread per node core"
        field = env[name].get("valueFrom", {}).get("resourceFieldRef", {})
        assert field.get("resource") == "limits.cpu", f"{overlay}: {name} is not the container's CPU limit"
        assert field.get("containerName", "trainer") == "trainer" and field.get("divisor", "1") in ("1", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_defaults_write_to_the_pvc_and_a_writable_reports_folder(overlay, rendered, dockerfiles):
    from pathlib import PurePosixPath

    from trainer.cli import build_parser

    # The image works in /work, where /work/models links to /models: `digits-train train` without
    # --models-dir exports into the mounted volume. A mount over /work itself hides that link (the export
    # lands in a scratch folder, gone with the pod); the root filesystem is read-only, so the reports
    # folder needs a mount of its own.
    instructions = dockerfiles["trainer"]
    workdir = PurePosixPath([i.args for i in instructions if i.keyword == "WORKDIR"][-1])
    defaults = build_parser().parse_args(["train", "--preset", "fast"])
    models_link = workdir / defaults.models_dir
    assert any(f"ln -s /models {models_link}" in i.args for i in instructions if i.keyword == "RUN")
    reports = workdir / defaults.reports_dir
    job = find(rendered[overlay], "Job", "trainer")
    mounts = container(job, "trainer")["volumeMounts"]
    for mount in mounts:
        path = PurePosixPath(mount["mountPath"])
        hidden = path == models_link or path in models_link.parents
        assert not hidden, f"{overlay}: the mount at {path} hides the image's {models_link}"
    writable = [PurePosixPath(m["mountPath"]) for m in mounts if not m.get("readOnly", False)]
    assert any(path == reports or path in reports.parents for path in writable), f"{overlay}: {reports}"


def _deploy_doc_k8s_commands() -> list[str]:
    """docs/deploy.md's Kubernetes shell block: one command per line, continuations joined, comments cut."""
    text = (REPO / "docs" / "deploy.md").read_text()
    section = text.split("\n## Kubernetes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1).replace("\\\n", " ")
    return [re.sub(r"\s+#.*", "", line).strip() for line in block.splitlines() if line.strip()]


def test_deploy_doc_edits_and_applies_the_same_overlay(rendered, pyproject):
    commands = _deploy_doc_k8s_commands()
    text = (REPO / "docs" / "deploy.md").read_text()
    for overlay in re.findall(r"k8s/overlays/([\w-]+)", text):
        assert overlay in OVERLAYS, f"docs/deploy.md names k8s/overlays/{overlay}, which does not exist"
    # One line picks the overlay; the image edit and the apply both use it, so choosing gpu there deploys
    # the gpu overlay with the images pointed at the registry (not the cpu overlay's edit and a bare gpu).
    choices = [c for c in commands if re.search(r"k8s/overlays/", c)]
    assert len(choices) == 1 and re.fullmatch(r"OVERLAY=k8s/overlays/[\w-]+", choices[0]), choices
    edits = [c for c in commands if "kustomize edit" in c]
    applies = [c for c in commands if c.startswith("kubectl apply")]
    assert edits and applies
    assert all('cd "$OVERLAY"' in c for c in edits) and applies == ['kubectl apply -k "$OVERLAY"']
    # The edit repoints every image of ours, at the project's version.
    images = {box["image"] for manifests in rendered.values() for workload in workloads(manifests)
              for box in pod_spec(workload)["containers"]}
    ours = {image.rpartition(":")[0] for image in images if image.startswith("digits-")}
    pairs = dict(re.findall(r"\b(digits-[\w-]+)=([^\s)]+)", " ".join(edits)))
    assert set(pairs) == ours, pairs
    assert all(ref.endswith(f"/{name}:{pyproject['project']['version']}") for name, ref in pairs.items())


def test_deploy_doc_kubectl_commands_name_rendered_resources(rendered):
    kinds = {"job": "Job", "deploy": "Deployment", "svc": "Service"}
    commands = [c for c in _deploy_doc_k8s_commands() if c.startswith("kubectl -n")]
    assert commands
    for command in commands:
        assert command.startswith(f"kubectl -n {NAMESPACE} "), command
        for overlay in OVERLAYS:
            for kind, name in re.findall(r"\b(job|deploy|svc)/([\w-]+)", command):
                resource = find(rendered[overlay], kinds[kind], name)
                if kind == "svc" and "port-forward" in command:
                    remote = int(re.search(rf"svc/{name} \d+:(\d+)", command).group(1))
                    assert remote in {p["port"] for p in resource["spec"]["ports"]}, command


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_writes_as_the_image_user_and_the_uid_serving_reads_as(overlay, rendered, dockerfiles):
    # Versions are exported 0755/0644 by the trainer's uid; serving reads them as that same uid, and the
    # Job runs as the user the trainer image was built for.
    image_user = [i.args for i in dockerfiles["trainer"] if i.keyword == "USER"][-1]
    trainer = pod_spec(find(rendered[overlay], "Job", "trainer"))["securityContext"]
    serving = pod_spec(find(rendered[overlay], "Deployment", "serving"))["securityContext"]
    assert image_user == f"{trainer['runAsUser']}:{trainer['runAsGroup']}"
    assert trainer["runAsUser"] == serving["runAsUser"] and trainer["fsGroup"] == trainer["runAsGroup"]
