"""The invariants of the shipped kubernetes/ files, read from the files (no
cluster or Docker here): TorchServe's APIs are on loopback unless a token
guards them, the predictor container is locked down and writes only to its
emptyDir volumes, probes ask for endpoints the pod serves, and the image's
Python is one that pyproject.toml allows."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from minimmf.serving.torchserve import read_properties
from tests.conftest import ROOT

KUBERNETES = ROOT / "kubernetes"
MODEL = "MMF_model"
# KServe's wrapper serves the pod's HTTP port (kserve_wrapper/__main__.py: ModelServer(http_port=8080)) with
# kserve 0.13.0's routes, among them these GETs
WRAPPER_PORT = 8080
WRAPPER_PATHS = {"/", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready", f"/v1/models/{MODEL}"}
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


@pytest.fixture(scope="module")
def properties() -> dict[str, str]:
    return read_properties(KUBERNETES / "config.properties")


@pytest.fixture(scope="module")
def container() -> dict:
    """The predictor's model container in inferenceservice.yaml."""
    return yaml.safe_load((KUBERNETES / "inferenceservice.yaml").read_text())["spec"]["predictor"]["model"]


@pytest.fixture(scope="module")
def volumes() -> dict[str, dict]:
    predictor = yaml.safe_load((KUBERNETES / "inferenceservice.yaml").read_text())["spec"]["predictor"]
    return {volume["name"]: volume for volume in predictor.get("volumes", [])}


@pytest.fixture(scope="module")
def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's last stage, the image that runs."""
    text = re.sub(r"\\\n", " ", (KUBERNETES / "Dockerfile").read_text())
    instructions = [tuple(line.split(maxsplit=1)) for line in text.splitlines() if line.strip()
                    and not line.lstrip().startswith("#")]
    last_from = max(i for i, (name, _) in enumerate(instructions) if name.upper() == "FROM")
    return [(name.upper(), arguments) for name, arguments in instructions[last_from:]]


def is_loopback(address: str) -> bool:
    host = urlsplit(address).hostname if "://" in address else address
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def token_authorization_on(properties: dict[str, str]) -> bool:
    return properties.get("disable_token_authorization", "false").lower() != "true"


def test_torchserve_apis_are_on_loopback_unless_a_token_guards_them(properties):
    """Inference and management (HTTP and gRPC) would let anyone in the cluster run or change models;
    the metrics API only reports figures. TorchServe's gRPC default address is 127.0.0.1."""
    guarded = token_authorization_on(properties)
    for key in ("inference_address", "management_address", "grpc_inference_address", "grpc_management_address"):
        address = properties.get(key, "127.0.0.1")
        assert guarded or is_loopback(address), f"{key}={address} with token authorization off"


def test_no_environment_variable_overrides_addresses_or_tokens(properties, container):
    """With enable_envvars_config=true, TS_* variables would override config.properties."""
    names = {variable["name"] for variable in container.get("env", [])}
    overriding = {name for name in names if re.fullmatch(r"TS_\w*(ADDRESS|TOKEN\w*)", name)}
    assert not overriding, f"{overriding} would override config.properties' addresses or token settings"


def test_the_container_runs_locked_down(container, dockerfile_final_stage):
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] != 0
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context.get("privileged", False) is False
    assert "ALL" in context["capabilities"]["drop"] and not context["capabilities"].get("add")
    image_user = [arguments for name, arguments in dockerfile_final_stage if name == "USER"][-1]
    assert image_user == str(context["runAsUser"]), "the image's USER and runAsUser should be the same uid"


def test_torchserve_writes_only_to_emptydir_volumes(container, volumes, dockerfile_final_stage):
    """Where TorchServe 0.12 writes: logs/ in its working directory, TEMP, and the JVM's /tmp."""
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(arguments for name, arguments in dockerfile_final_stage
                                                     if name == "ENV")))
    workdir = [arguments for name, arguments in dockerfile_final_stage if name == "WORKDIR"][-1]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    for path in (env["TEMP"], f"{workdir}/logs", "/tmp"):
        assert path in mounts, f"{path} is not mounted, and the root filesystem is read-only"
        assert "emptyDir" in volumes[mounts[path]], f"{path} should be an emptyDir volume"


def served_endpoints(properties: dict[str, str]) -> set[tuple[int, str]]:
    """(port, path) a kubelet can probe: the wrapper's, and TorchServe's /ping where its inference
    API is not on loopback (TorchServe 0.12 serves no /v2/health/*)."""
    endpoints = {(WRAPPER_PORT, path) for path in WRAPPER_PATHS}
    inference = urlsplit(properties["inference_address"])
    if not is_loopback(properties["inference_address"]):
        endpoints.add((inference.port, "/ping"))
    return endpoints


def test_probes_ask_for_endpoints_the_pod_serves(properties, container):
    probes = {name: container[name] for name in PROBES if name in container}
    for name, probe in probes.items():
        assert "httpGet" in probe, f"{name}: only HTTP probes are checked here"
        target = (probe["httpGet"].get("port", WRAPPER_PORT), probe["httpGet"]["path"])
        assert target in served_endpoints(properties), f"{name} asks for {target}, which nothing in the pod serves"


def test_the_image_python_is_one_pyproject_allows(dockerfile_final_stage):
    image = dockerfile_final_stage[0][1].split()[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:[.-]\S*)?", image)
    assert match, f"the final stage is FROM {image}: it should be an official python:X.Y image, so its Python is known"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(f"{match.group(1)}.{match.group(2)}") in SpecifierSet(requires), \
        f"{image} runs Python {match.group(1)}.{match.group(2)}, outside requires-python {requires}"
