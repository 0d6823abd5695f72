"""Every file in cluster/ parsed and validated, and the security it promises checked. No Ray is started
and nothing reaches a cloud or a Kubernetes cluster.

- ``cluster/local.sh``: ``bash -n`` (syntax only, nothing run) and its ``ray start`` lines parsed by
  Ray's CLI parser.
- ``cluster/aws.yaml``: Ray's ``ray-schema.json`` (raw file), then Ray's own config preparation and
  validation (``prepare_config``, ``validate_config``, both offline; what ``ray up`` does after them,
  looking up instance types and creating the IAM role, key pair and security group, needs boto3 and
  AWS credentials), and each ``ray start`` line parsed by Ray's own CLI parser.
- ``cluster/kuberay/*.yaml``: the CRDs' OpenAPI v3 schemas (KubeRay v1.7, copies in
  ``../shared/kuberay-crds/``; skipped, saying why, where absent), made strict as ``kubectl apply``
  is by default (an unknown field is an error, not silently dropped); the CEL rules
  (``x-kubernetes-validations``) are not evaluated.
- ``rayservice.yaml``'s ``serveConfigV2`` equals what ``dotseg.cluster_files`` generates from
  ``configs/serve.yaml``, and Serve's own schema accepts it.
- ``cluster/Dockerfile`` and ``.dockerignore``: parsed here; the build's promises checked.
- ``cluster/README.md``: its ``ray`` commands parsed by Ray's CLI, the environment variables it names
  exist in the installed Ray.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import ray
import yaml

from dotseg.cluster_files import (
    IN_CLUSTER_HTTP_HOST,
    IN_CLUSTER_PROXY_LOCATION,
    main,
    render_rayservice,
    serve_config_v2,
)
from dotseg.config import Config, load_config, serve_file_section

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
CRDS = REPO.parent / "shared" / "kuberay-crds"
RAY_PKG = Path(ray.__file__).parent
SERVE_YAML = REPO / "configs" / "serve.yaml"
#: Where every manifest mounts the shared run storage, and the Secret holding the cluster token.
RUNS_MOUNT = "/mnt/dotseg"
AUTH_SECRET = "dotseg-ray-auth"
#: Ports of a Ray cluster that must never be open to the world: GCS, dashboard / Jobs API, Ray Client,
#: Serve HTTP and gRPC, object manager (aws.yaml), dashboard agent.
RAY_PORTS = (6379, 8265, 10001, 8000, 9000, 8076, 52365)


def _yaml(path: Path) -> Any:
    # libyaml's loader where PyYAML has it: the three CRDs are 3 MB of YAML (7 s in pure Python).
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def test_every_cluster_file_is_checked_here() -> None:
    """A new file in cluster/ needs its checks in this module."""
    known = {"local.sh", "Dockerfile", "aws.yaml", "README.md"}
    known |= {f"kuberay/{n}" for n in ("raycluster.yaml", "rayjob-train.yaml", "rayservice.yaml")}
    found = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*") if p.is_file()}
    assert found == known


# -- cluster/local.sh ------------------------------------------------------------------------------


def _local_sh_ray_starts() -> list[tuple[dict[str, str], click.Context]]:
    """local.sh's ``ray start`` lines, shell variables replaced by sample values, parsed by Ray."""
    text = (CLUSTER / "local.sh").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if "ray start" not in line or line.lstrip().startswith("#"):
            continue
        line = re.sub(r"\$\(\([^)]*\)\)", "52401", line)  # $((52400 + i))
        line = re.sub(r"\$\{?\w+\}?", "2", line)  # "$PORT", "$cpus", "$STATE", ...
        line = re.split(r"\s[>&]", line)[0]  # up to the redirection / background
        line = re.sub(r"^\s*setsid\s+(env\s+)?", "", line)
        start = _ray_start(line)
        assert start is not None, line
        out.append(start)
    return out


def test_local_sh_parses_and_binds_loopback() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here to check cluster/local.sh's syntax")
    check = subprocess.run([bash, "-n", str(CLUSTER / "local.sh")], capture_output=True, text=True)  # runs nothing
    assert check.returncode == 0, check.stderr
    starts = _local_sh_ray_starts()
    assert len(starts) == 2
    for _, ctx in starts:
        assert ctx.params["node_ip_address"] == "127.0.0.1" or "127.0.0.1:" in (ctx.params["address"] or "")
    (head,) = [ctx for _, ctx in starts if ctx.params["head"]]
    assert head.params["dashboard_host"] == "127.0.0.1"
    # It stops exactly what it started, never with `ray stop` (which stops every Ray on the machine).
    code = [ln for ln in (CLUSTER / "local.sh").read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code if "ray stop" in ln]


def test_local_sh_every_ray_start_uses_a_generated_token() -> None:
    code = [ln.strip() for ln in (CLUSTER / "local.sh").read_text().splitlines() if not ln.lstrip().startswith("#")]
    first_start = next(i for i, ln in enumerate(code) if "ray start" in ln)
    exported = [i for i, ln in enumerate(code) if ln.startswith("export RAY_AUTH_MODE=token RAY_AUTH_TOKEN")]
    assert exported and exported[0] < first_start, "RAY_AUTH_MODE=token and the token must be exported before ray start"
    assert any("secrets.token_hex(32)" in ln for ln in code) and any("umask 077" in ln for ln in code)
    for _, ctx in _local_sh_ray_starts():
        assert ctx.params["node_ip_address"] == "127.0.0.1", ctx.params


# -- cluster/aws.yaml (ray up) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws() -> dict[str, Any]:
    return _yaml(CLUSTER / "aws.yaml")


@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    return json.loads((RAY_PKG / "autoscaler" / "ray-schema.json").read_text())


def _commands(cfg: dict[str, Any]) -> Iterator[str]:
    """Every shell command of a launcher config, node-type ones included."""
    for key, value in cfg.items():
        if key.endswith("_commands"):
            yield from value
    for node_type in cfg.get("available_node_types", {}).values():
        for key, value in node_type.items():
            if key.endswith("_commands"):
                yield from value


def _ray_start(command: str) -> tuple[dict[str, str], click.Context] | None:
    """The environment and Ray's own parse of the ``ray start`` in ``command``, or None."""
    for part in re.split(r";|&&|\|\|", command):
        words = shlex.split(part)
        env: dict[str, str] = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        if words[:2] == ["ray", "start"]:
            from ray.scripts.scripts import start

            args = [w.replace("$RAY_HEAD_IP", "10.0.0.1") for w in words[2:]]
            return env, start.make_context("start", args)  # raises on an unknown option or bad value
    return None


def _world_open_ray_ports(ip_permissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inbound rules that open a Ray port to any address (IPv4 or IPv6)."""
    bad = []
    for rule in ip_permissions:
        world = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])
        ]
        if not {"0.0.0.0/0", "::/0"} & set(world):
            continue
        every_port = str(rule.get("IpProtocol")) == "-1" or rule.get("FromPort", -1) == -1
        lo, hi = rule.get("FromPort", 0), rule.get("ToPort", 65535)
        if every_port or any(lo <= p <= hi for p in RAY_PORTS):
            bad.append(rule)
    return bad


def test_aws_matches_rays_schema(aws: dict[str, Any], ray_schema: dict[str, Any]) -> None:
    jsonschema.validate(aws, ray_schema)
    typo = copy.deepcopy(aws)
    typo["available_node_types"]["gpu_train"]["max_worker"] = 8
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(typo, ray_schema)
    wrong = copy.deepcopy(aws)
    wrong["available_node_types"]["cpu_serve"]["resources"]["CPU"] = "8"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, ray_schema)


def test_aws_passes_rays_config_preparation(aws: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(aws))  # merges ray/autoscaler/aws/defaults.yaml
    validate_config(full)
    assert full["head_node_type"] == "head"
    assert set(full["available_node_types"]) == {"head", "gpu_train", "cpu_serve"}
    too_many = copy.deepcopy(full)
    too_many["available_node_types"]["cpu_serve"]["min_workers"] = 13
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(too_many)


def test_aws_node_types_and_images(aws: dict[str, Any]) -> None:
    types = aws["available_node_types"]
    assert aws["provider"]["type"] == "aws"
    assert types[aws["head_node_type"]]["resources"] == {"CPU": 0}
    gpu, cpu = types["gpu_train"], types["cpu_serve"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] >= 1
    assert cpu["min_workers"] in (0, 1) and cpu["max_workers"] >= 1 and "GPU" not in cpu["resources"]
    assert aws["docker"]["image"].endswith("/dotseg:cpu")
    assert gpu["docker"]["worker_image"].endswith("/dotseg:cuda")
    assert not any("docker" in t for name, t in types.items() if name != "gpu_train")


def test_aws_every_ray_start_uses_the_token(aws: dict[str, Any]) -> None:
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    starts = [s for s in map(_ray_start, _commands(aws)) if s is not None]
    assert len(starts) == 2  # the head's and the workers'
    mounts = aws["file_mounts"]
    for env, ctx in starts:
        assert env.get("RAY_AUTH_MODE") == "token", ctx.params
        token_path = env.get("RAY_AUTH_TOKEN_PATH")
        assert token_path in mounts, f"{token_path} is not a file mount"
        # The local side is the file `ray get-auth-token --generate` writes.
        local = Path(mounts[token_path]).expanduser()
        assert local == _get_default_token_path(), (local, _get_default_token_path())
    (head_ctx,) = [ctx for _, ctx in starts if ctx.params["head"]]
    assert head_ctx.params["dashboard_host"] == "127.0.0.1"
    assert not any("0.0.0.0" in c for c in _commands(aws))
    assert "RAY_AUTH_TOKEN=" not in (CLUSTER / "aws.yaml").read_text()  # no token in the file itself


def test_aws_opens_no_ray_port_to_the_world(aws: dict[str, Any]) -> None:
    rules = aws["provider"].get("security_group", {}).get("IpPermissions", [])
    assert _world_open_ray_ports(rules) == []
    # With no SecurityGroupIds, `ray up` creates the group with intra-cluster traffic and SSH only.
    assert not any("SecurityGroupIds" in t["node_config"] for t in aws["available_node_types"].values())
    # The check itself catches what it must.
    world = {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert _world_open_ray_ports([{"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", **world}]) == []
    for rule in (
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", **world},
        {"FromPort": 6000, "ToPort": 7000, "IpProtocol": "tcp", **world},
        {"IpProtocol": "-1", **world},
        {"FromPort": 10001, "ToPort": 10001, "IpProtocol": "tcp", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ):
        assert _world_open_ray_ports([rule]) == [rule]


def test_aws_shared_run_storage_is_mounted(aws: dict[str, Any]) -> None:
    options = " ".join(aws["docker"]["run_options"])
    assert re.search(rf"-v \S+:{RUNS_MOUNT}(\s|$)", options)


# -- cluster/kuberay/*.yaml (KubeRay v1.7) ----------------------------------------------------------

MANIFESTS = {
    "raycluster.yaml": "RayCluster",
    "rayjob-train.yaml": "RayJob",
    "rayservice.yaml": "RayService",
}
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
needs_crds = pytest.mark.skipif(
    not CRDS.is_dir(),
    reason=f"the KubeRay CRDs are not here ({CRDS}): copy ray-operator/config/crd/bases/ray.io_*.yaml of "
    "KubeRay v1.7.0 there to validate the manifests against their schemas",
)


def _manifest(name: str) -> dict[str, Any]:
    return _yaml(CLUSTER / "kuberay" / name)


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with kubectl's default strict field
    validation: an object's fields are the declared ones unless it preserves unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    return out


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.protocols.Validator]:
    out = {}
    for kind, filename in CRD_FILES.items():
        crd = _yaml(CRDS / filename)
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _strict(v1["schema"]["openAPIV3Schema"])
        jsonschema.Draft7Validator.check_schema(schema)
        out[kind] = jsonschema.Draft7Validator(schema)
    return out


def _cluster_specs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]
    return [
        {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}[
            manifest["kind"]
        ]
    ]


def _groups(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, group spec) of the head and every worker group."""
    return [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


@needs_crds
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_its_crd(name: str, validators: dict[str, Any]) -> None:
    m = _manifest(name)
    assert m["apiVersion"] == "ray.io/v1" and m["kind"] == MANIFESTS[name]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[m["kind"]].iter_errors(m)]
    assert errors == []


@needs_crds
def test_the_crd_schemas_are_really_applied(validators: dict[str, Any]) -> None:
    """Broken manifests fail: a wrong type, a value outside an enum, an unknown (misspelt) field, a
    missing required field, deep inside the pod template too."""
    job = _manifest("rayjob-train.yaml")
    cluster = _manifest("raycluster.yaml")
    breakages: list[tuple[dict[str, Any], str]] = []
    b = copy.deepcopy(job)
    b["spec"]["shutdownAfterJobFinishes"] = "yes"
    breakages.append((b, "is not of type 'boolean'"))
    b = copy.deepcopy(job)
    b["spec"]["ttlSecondAfterFinished"] = 60
    breakages.append((b, "ttlSecondAfterFinished"))
    b = copy.deepcopy(cluster)
    b["spec"]["authOptions"]["mode"] = "tokens"
    breakages.append((b, "is not one of"))
    b = copy.deepcopy(cluster)
    del b["spec"]["workerGroupSpecs"][0]["groupName"]
    breakages.append((b, "'groupName' is a required property"))
    b = copy.deepcopy(cluster)
    b["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    breakages.append((b, "imagePullPolice"))
    for broken, message in breakages:
        errors = [e.message for e in validators[broken["kind"]].iter_errors(broken)]
        assert any(message in e for e in errors), (message, errors)


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_security(name: str) -> None:
    """Token auth on, with the shared Secret; nothing exposed outside the Kubernetes cluster; pods
    run as non-root; the Ray of the image."""
    m = _manifest(name)
    for path, node in _walk(m):
        assert node not in ("LoadBalancer", "NodePort"), path
        assert not (isinstance(node, dict) and node.get("enableIngress")), path
        assert not (isinstance(node, dict) and (node.get("hostNetwork") or "hostPort" in node)), path
    for cluster in _cluster_specs(m):
        assert cluster["authOptions"] == {"mode": "token", "secretName": AUTH_SECRET}
        assert cluster["rayVersion"] == ray.__version__
        assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
        for group_name, group in _groups(cluster):
            pod = group["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, group_name
            for c in pod["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, (group_name, c["name"])
                assert not any(e["name"].startswith("RAY_AUTH") for e in c.get("env", [])), "token in the manifest"


def test_manifest_ray_start_params_are_rays() -> None:
    from ray.scripts.scripts import start

    for name in MANIFESTS:
        for cluster in _cluster_specs(_manifest(name)):
            for group_name, group in _groups(cluster):
                params = group.get("rayStartParams", {})
                assert "dashboard-host" not in params or group_name == "head", (name, group_name)
                args = (["--head"] if group_name == "head" else ["--address=10.0.0.1:6379"]) + [
                    f"--{k}={v}" for k, v in params.items()
                ]
                start.make_context("start", args)


def test_manifest_images_and_gpus() -> None:
    """CPU pods run the CPU image, GPU pods (nvidia.com/gpu) the CUDA one."""
    for name in MANIFESTS:
        for cluster in _cluster_specs(_manifest(name)):
            for group_name, group in _groups(cluster):
                (c,) = group["template"]["spec"]["containers"]
                gpus = int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
                assert c["image"].endswith("/dotseg:cuda" if gpus else "/dotseg:cpu"), (name, group_name)


def test_rayjob_runs_a_valid_training_and_then_shuts_down() -> None:
    from dotseg.cli import build_parser

    job = _manifest("rayjob-train.yaml")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    words = shlex.split(spec["entrypoint"])
    assert words[:4] == ["dotseg", "train", "--address", "auto"]
    args = build_parser().parse_args(words[1:])
    overrides = [*args.overrides, f"train.num_workers={args.workers}", f"train.use_gpu={str(args.gpu).lower()}"]
    cfg = load_config(args.config, overrides)  # the config name and every --set are valid
    # The cluster fits the run: one GPU pod per worker, fixed size.
    (gpu_group,) = [g for _, g in _groups(spec["rayClusterSpec"]) if "groupName" in g]
    assert cfg.train.use_gpu and gpu_group["replicas"] == gpu_group["minReplicas"] == gpu_group["maxReplicas"]
    assert gpu_group["replicas"] == cfg.train.num_workers
    # The run is written to the shared volume, mounted in every pod.
    assert Path(cfg.train.storage_path).is_relative_to(RUNS_MOUNT)
    for group_name, group in _groups(spec["rayClusterSpec"]):
        pod = group["template"]["spec"]
        (c,) = pod["containers"]
        mount = next(v for v in c["volumeMounts"] if v["mountPath"] == RUNS_MOUNT)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["persistentVolumeClaim"]["claimName"] == "dotseg-runs", group_name


# -- serveConfigV2 generated from configs/serve.yaml ------------------------------------------------


def test_rayservice_serve_config_is_generated_from_serve_yaml() -> None:
    text = (CLUSTER / "kuberay" / "rayservice.yaml").read_text()
    assert render_rayservice(text, SERVE_YAML.read_text()) == text, "stale: run python -m dotseg.cluster_files"
    committed = yaml.safe_load(text)["spec"]["serveConfigV2"]
    assert committed == serve_config_v2(SERVE_YAML.read_text())


def test_serve_config_v2_differs_from_serve_yaml_only_where_declared() -> None:
    source = _yaml(SERVE_YAML)
    generated = yaml.safe_load(serve_config_v2(SERVE_YAML.read_text()))
    assert generated["proxy_location"] == IN_CLUSTER_PROXY_LOCATION
    assert generated["http_options"]["host"] == IN_CLUSTER_HTTP_HOST
    expected = copy.deepcopy(source)
    expected["proxy_location"] = IN_CLUSTER_PROXY_LOCATION
    expected["http_options"]["host"] = IN_CLUSTER_HTTP_HOST
    assert generated == expected
    # dotseg reads both as the same serving config, but for the host.
    ours = Config.from_dict(serve_file_section(source)).serve
    theirs = Config.from_dict(serve_file_section(generated)).serve
    assert theirs.model_copy(update={"host": ours.host}) == ours


def test_serve_config_v2_passes_serves_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(serve_config_v2(SERVE_YAML.read_text())))


def test_rayservice_ports_match_the_serve_config() -> None:
    svc = _manifest("rayservice.yaml")
    port = yaml.safe_load(svc["spec"]["serveConfigV2"])["http_options"]["port"]
    for group_name, group in _groups(svc["spec"]["rayClusterConfig"]):
        (c,) = group["template"]["spec"]["containers"]
        assert {"containerPort": port, "name": "serve"} in c["ports"], group_name


def test_generator_refuses_a_bad_serve_config() -> None:
    bad = SERVE_YAML.read_text().replace("max_replicas: 2", "max_replica: 2")
    with pytest.raises(ValueError, match="max_replica"):
        serve_config_v2(bad)


def test_generator_cli_check_and_rewrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text((CLUSTER / "kuberay" / "rayservice.yaml").read_text())
    serve = tmp_path / "serve.yaml"
    serve.write_text(SERVE_YAML.read_text().replace("max_replicas: 2", "max_replicas: 3"))
    argv = ["--serve-config", str(serve), "--manifest", str(manifest)]
    assert main([*argv, "--check"]) == 1
    assert main(argv) == 0
    assert (
        yaml.safe_load(yaml.safe_load(manifest.read_text())["spec"]["serveConfigV2"])["applications"][0]["args"][
            "max_replicas"
        ]
        == 3
    )
    assert main([*argv, "--check"]) == 0
    assert "stale" in capsys.readouterr().err


# -- cluster/Dockerfile and .dockerignore -----------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of cluster/Dockerfile: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        instruction, _, args = pending.strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, "unterminated continuation"
    return out


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _glob(pattern: str) -> re.Pattern[str]:
    rx = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            rx, i = rx + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            rx, i = rx + ".*", i + 2
        elif pattern[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pattern[i] == "?":
            rx, i = rx + "[^/]", i + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return re.compile(rx)


def _ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: a pattern matches it or a parent
    directory; later ``!`` patterns take it back."""
    parts = path.split("/")
    ignored = False
    for pattern in _dockerignore():
        negate = pattern.startswith("!")
        rx = _glob(pattern.lstrip("!").strip("/"))
        if any(rx.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_and_the_model_in() -> None:
    for path in (".venv/bin/python", "runs/x/best.safetensors", ".git/HEAD", "wandb/run-1/x", "checkpoints/a.pt"):
        assert _ignored(path), path
    assert _ignored("dotseg/cli/__pycache__/common.cpython-311.pyc")
    for path in (
        "pyproject.toml",
        "README.md",
        "dotseg/assets/model.safetensors",
        "dotseg/assets/model-v2.safetensors",
        "dotseg/cli/__init__.py",
        "configs/serve.yaml",
    ):
        assert not _ignored(path), path
    assert _glob("**/checkpoints").fullmatch("a/b/checkpoints") and not _glob("*.pyc").fullmatch("a/b.pyc")


def test_dockerfile_device_build_argument() -> None:
    steps = _dockerfile()
    froms = [a for i, a in steps if i == "FROM"]
    assert steps[0] == ("ARG", "DEVICE=cpu")  # before the first FROM: usable in FROM lines
    assert froms[-1] == "base-${DEVICE}"
    stages = {a.split(" AS ")[1]: n for n, a in enumerate(froms) if " AS " in a}
    assert set(stages) == {"base-cpu", "base-cuda"}
    envs = " ".join(a for i, a in steps if i == "ENV")
    assert "DOTSEG_TORCH_INDEX=https://download.pytorch.org/whl/cpu" in envs


def test_dockerfile_installs_torch_first_then_the_package_non_editable() -> None:
    steps = _dockerfile()
    runs = [(n, a) for n, (i, a) in enumerate(steps) if i == "RUN" and "pip install" in a]
    torch_at = [n for n, a in runs if '"torch==${TORCH_VERSION}"' in a and "--index-url" in a]
    package_at = [n for n, a in runs if "/src" in a]
    assert len(torch_at) == len(package_at) == 1 and torch_at[0] < package_at[0]
    copy_dotseg = next(n for n, (i, a) in enumerate(steps) if i == "COPY" and a.startswith("dotseg "))
    assert torch_at[0] < copy_dotseg < package_at[0]  # a code change does not reinstall torch
    package = steps[package_at[0]][1]
    assert "-e " not in package and "--editable" not in package
    # the build checks that every shipped model is in the installed package
    assert all(name in package for name in ("model.safetensors", "model-v2.safetensors"))


def test_dockerfile_copies_only_what_exists_and_is_in_the_context() -> None:
    for instruction, args in _dockerfile():
        if instruction == "COPY":
            *sources, _dest = args.split()
            for src in sources:
                assert (REPO / src).exists(), src
                assert not _ignored(src), f"{src} is excluded by .dockerignore"


def test_dockerfile_runs_as_non_root_downloads_nothing_at_start_and_turns_on_auth() -> None:
    steps = _dockerfile()
    user = [a for i, a in steps if i == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0") and user.split(":")[0].isdigit()  # numeric: runAsNonRoot
    assert not [a for i, a in steps if i == "ENTRYPOINT"]  # `ray up` and KubeRay replace CMD
    (cmd,) = [json.loads(a) for i, a in steps if i == "CMD"]
    assert not re.search(r"pip|curl|wget|download|hf_hub|http", " ".join(cmd))
    envs = [a for i, a in steps if i == "ENV"]
    assert "RAY_AUTH_MODE=token" in envs and "HOME=/home/ray" in envs


def test_the_model_is_package_data() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "assets/*" in pyproject["tool"]["setuptools"]["package-data"]["dotseg"]
    from dotseg.inference.predictor import SHIPPED_MODELS

    for name in set(SHIPPED_MODELS.values()):  # every shipped model: the weights, not a Git LFS pointer
        assert (REPO / "dotseg" / "assets" / name).stat().st_size > 1_000_000


# -- cluster/README.md and the names the files use -------------------------------------------------


def _readme_ray_commands() -> list[list[str]]:
    text = (CLUSTER / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S)).replace("\\\n", " ")
    out = []
    for line in blocks.splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words.pop(0)
        if words[:1] == ["ray"]:
            out.append(words[1:])
    return out


def test_readme_ray_commands_parse_with_rays_cli() -> None:
    from ray.scripts.scripts import cli

    commands = _readme_ray_commands()
    assert {c[0] for c in commands} >= {"up", "dashboard", "down", "job", "get-auth-token", "attach"}
    for words in commands:
        cmd: click.Command = cli
        while isinstance(cmd, click.Group):
            cmd = cmd.commands[words.pop(0)]
        cmd.make_context(cmd.name or "", words)  # raises on an unknown option


def test_ray_environment_variables_named_exist_in_ray() -> None:
    """Every RAY_* variable the cluster files and their README name is one Ray reads."""
    texts = [p.read_text() for p in CLUSTER.rglob("*") if p.is_file()]
    names = set(re.findall(r"\bRAY_[A-Z0-9_]+\b", "\n".join(texts))) - {"RAY_HEAD_IP"}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} <= names
    missing = set(names)
    raylet = next(RAY_PKG.glob("_raylet*.so")).read_bytes()
    missing = {n for n in missing if n.encode() not in raylet}
    for p in RAY_PKG.rglob("*.py"):
        if not missing:
            break
        text = p.read_text(errors="ignore")
        missing = {n for n in missing if n not in text}
    assert not missing
    # RAY_HEAD_IP is set by the cluster launcher for worker_start_ray_commands.
    assert "RAY_HEAD_IP" in (RAY_PKG / "autoscaler" / "_private" / "util.py").read_text()
