"""deploy/kubernetes: every overlay renders with a real kustomize, validates offline against the
Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors), and says what the
server needs; the simulation overlay's own arguments start a real server whose probe routes
answer as the kubelet calls them (TLS, certificate not verified).
"""

from __future__ import annotations

import copy
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests._server import free_ports, start_server
from tests.deploy._kustomize import KUBERNETES, OVERLAYS, REPO, Render, render_with

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate (the k8s extra) is missing: make test-deploy installs it",
)

# the oldest Kubernetes minor still commonly run, and the newest the schemas know
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version() + ".0")
TEE_OVERLAYS = {
    "sev-snp": ("kata-qemu-snp", "sev-snp"),
    "tdx": ("kata-qemu-tdx", "tdx"),
}
PORTS = {"unattested": 9923, "attested": 9924, "management": 9925, "grpc": 9926}

Docs = list[dict[str, Any]]


def _one(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def _pod(docs: Docs) -> dict[str, Any]:
    spec: dict[str, Any] = _one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def _server(docs: Docs) -> dict[str, Any]:
    containers = _pod(docs)["containers"]
    assert [c["name"] for c in containers] == ["server"]
    return containers[0]


# -- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Docs], overlay: str, version: str
) -> None:
    docs = rendered[overlay]
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "Service", "Deployment"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_is_strict_and_not_vacuous(rendered: dict[str, Docs]) -> None:
    """A misspelt field, a wrong type and a missing required field are each refused. (The
    schemas do not check quantity formats such as "4 GB": kubernetes-validate takes any string.)"""
    version = K8S_VERSIONS[-1]
    broken = copy.deepcopy(_one(rendered["simulation"], "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = copy.deepcopy(_one(rendered["simulation"], "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9923"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)
    broken = copy.deepcopy(_one(rendered["simulation"], "Deployment"))
    del broken["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


# -- what every overlay must keep --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_non_root_and_locked_down(rendered: dict[str, Docs], overlay: str) -> None:
    """Pod Security "restricted", plus a read-only root and no API token; gramine-sgx adds one
    hostPath, the node's aesmd socket, and nothing else."""
    pod = _pod(rendered[overlay])
    server = _server(rendered[overlay])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert not pod.get(key)
    context = server["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context.get("privileged") is not True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in context["capabilities"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    host_paths = [v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v]
    assert host_paths == (["/var/run/aesmd"] if overlay == "gramine-sgx" else [])
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "secret", "hostPath"}, volume
    namespace = _one(rendered[overlay], "Namespace")["metadata"]["labels"]
    expected = "privileged" if overlay == "gramine-sgx" else "restricted"
    assert namespace["pod-security.kubernetes.io/enforce"] == expected
    assert namespace["pod-security.kubernetes.io/warn"] == "restricted"
    account = _one(rendered[overlay], "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_bounded(rendered: dict[str, Docs], overlay: str) -> None:
    resources = _server(rendered[overlay])["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]
    tmp = next(v for v in _pod(rendered[overlay])["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes(rendered: dict[str, Docs], overlay: str) -> None:
    """The server's four ports at their defaults; probes on the attested port over HTTPS."""
    from blindai.server import ServerSettings

    server = _server(rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == PORTS
    defaults = ServerSettings.model_fields
    assert {name: defaults[f"{name}_port"].default for name in PORTS} == PORTS
    probes = {kind: server[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness")}
    probes["readiness"] = server["readinessProbe"]["httpGet"]
    for kind, probe in probes.items():
        assert probe["port"] == "attested" and probe["scheme"] == "HTTPS", kind
    assert probes["liveness"]["path"] == probes["startup"]["path"] == "/v2/health/live"
    assert probes["readiness"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pass_tcp_through(rendered: dict[str, Docs], overlay: str) -> None:
    docs = rendered[overlay]
    labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    headless = _one(docs, "Service", "blindai-replicas")["spec"]
    balancer = _one(docs, "Service", "blindai")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    # the public Service is plain TCP on 9923-9926 (TLS passes through to the pod); the
    # simulation overlay keeps it inside the cluster
    assert balancer["type"] == ("ClusterIP" if overlay == "simulation" else "LoadBalancer")
    for spec in (headless, balancer):
        assert spec["selector"].items() <= labels.items()
        assert {p["name"]: (p["port"], p["targetPort"], p["protocol"]) for p in spec["ports"]} == {
            name: (port, name, "TCP") for name, port in PORTS.items()
        }
    assert not [d for d in docs if d["kind"] in ("Ingress", "Secret", "ConfigMap")]


# -- per overlay ---------------------------------------------------------------------------------


def test_simulation_overlay(rendered: dict[str, Docs]) -> None:
    docs = rendered["simulation"]
    assert _server(docs)["args"] == ["--simulation", "--host", "0.0.0.0"]
    assert "runtimeClassName" not in _pod(docs)
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {
        "blindai-simulation"
    }


@pytest.mark.parametrize("overlay", sorted(TEE_OVERLAYS))
def test_confidential_container_overlays(rendered: dict[str, Docs], overlay: str) -> None:
    runtime_class, tee = TEE_OVERLAYS[overlay]
    pod = _pod(rendered[overlay])
    args = _server(rendered[overlay])["args"]
    assert pod["runtimeClassName"] == runtime_class
    assert args[args.index("--tee") + 1] == tee
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--tsm-report-dir") + 1] == "/sys/kernel/config/tsm/report"
    assert "--simulation" not in args


def test_gramine_sgx_overlay(rendered: dict[str, Docs]) -> None:
    server = _server(rendered["gramine-sgx"])
    assert server["command"] == ["gramine-sgx", "blindai"]
    assert "args" not in server  # loader.argv in the signed manifest decides
    assert server["image"].startswith("blindai-gramine-sgx:")
    limits = server["resources"]["limits"]
    assert {k: limits[k] for k in limits if k.startswith("sgx.intel.com/")} == {
        "sgx.intel.com/epc": "8Gi",
        "sgx.intel.com/enclave": 1,
        "sgx.intel.com/provision": 1,
    }
    assert {"mountPath": "/var/run/aesmd", "name": "aesmd-socket"} in server["volumeMounts"]


# -- the real server, with the rendered arguments ---------------------------------------------


def _without_host(args: list[str]) -> list[str]:
    """The arguments less ``--host VALUE`` (tests listen on loopback only)."""
    i = args.index("--host")
    assert args[i + 1] == "0.0.0.0"
    return args[:i] + args[i + 2 :]


def _env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_simulation_overlay_serves_its_probes_like_the_kubelet(
    rendered: dict[str, Docs], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``blindai serve`` with the overlay's arguments and environment; each probe's path gets
    200 over TLS on the attested port, the certificate unverified and no client certificate,
    as the kubelet does."""
    server_spec = _server(rendered["simulation"])
    for name, value in _env_of(server_spec).items():
        monkeypatch.setenv(name, value)
    server = start_server(tmp_path, *_without_host(server_spec["args"]), simulation=False)
    try:
        kubelet = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        kubelet.check_hostname = False
        kubelet.verify_mode = ssl.CERT_NONE
        ports = {"attested": server.attested_port}
        for kind in ("startup", "liveness", "readiness"):
            probe = server_spec[f"{kind}Probe"]["httpGet"]
            url = f"https://{server.host}:{ports[probe['port']]}{probe['path']}"
            with urllib.request.urlopen(url, timeout=10, context=kubelet) as reply:
                assert reply.status == 200, (kind, url)
    finally:
        server.stop()
    assert "simulation" in server.log().lower()


@pytest.mark.parametrize("overlay", sorted(TEE_OVERLAYS))
def test_tee_overlay_arguments_select_that_tee_and_fail_closed_here(
    rendered: dict[str, Docs], overlay: str
) -> None:
    """The overlay's arguments parse; on this machine (no TEE, no configfs-tsm) the server
    refuses to start with one line, and never falls back to simulation."""
    server_spec = _server(rendered[overlay])
    ports = [str(p) for p in free_ports(3)]
    env = {**os.environ, **_env_of(server_spec), "PYTHONPATH": str(REPO / "src")}
    tsm = server_spec["args"][server_spec["args"].index("--tsm-report-dir") + 1]
    if Path(tsm).exists():
        pytest.skip(f"{tsm} exists: this machine is a confidential VM")
    loopback = ["--host", "127.0.0.1", "--unattested-port", ports[0]]
    loopback += ["--attested-port", ports[1], "--management-port", ports[2], "--grpc-port", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "blindai", "serve", *_without_host(server_spec["args"]), *loopback],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ConfigurationError: no configfs-tsm at {tsm}: needs Linux >= 6.7 in a TDX or SEV-SNP "
        "guest, with configfs mounted on /sys/kernel/config"
    ]


# -- secrets ---------------------------------------------------------------------------------


def test_no_secret_material_in_the_manifests() -> None:
    files = sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file())
    files += [REPO / "Dockerfile", REPO / ".dockerignore"]
    assert len(files) >= 12
    for path in files:
        text = path.read_text()
        assert "PRIVATE KEY" not in text, path
        assert not re.search(r"^\s*(stringData|data):", text, re.M), path
        assert not re.search(r"^kind:\s*Secret\b", text, re.M), path


def test_unattested_tls_component_references_a_secret_by_name(
    kustomize: list[str], tmp_path: Path
) -> None:
    """Composed with an overlay: the key comes from the Secret blindai-unattested-tls (created
    out of band), through settings the server reads (BLINDAI_UNATTESTED_TLS_*)."""
    from blindai.server import ServerSettings

    root = tmp_path / "with-tls"
    root.mkdir()
    rel = os.path.relpath(KUBERNETES, root)
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel}/overlays/sev-snp]\n"
        f"components: [{rel}/components/unattested-tls]\n"
    )
    docs = render_with(kustomize, root, "--load-restrictor", "LoadRestrictionsNone")
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    assert not [d for d in docs if d["kind"] == "Secret"]
    server = _server(docs)
    volume = next(v for v in _pod(docs)["volumes"] if v["name"] == "unattested-tls")
    assert volume["secret"]["secretName"] == "blindai-unattested-tls"
    mount = next(m for m in server["volumeMounts"] if m["name"] == "unattested-tls")
    assert mount["readOnly"] is True
    env = _env_of(server)
    for field in ("unattested_tls_cert", "unattested_tls_key"):
        assert field in ServerSettings.model_fields
        assert env[f"BLINDAI_{field.upper()}"].startswith(mount["mountPath"] + "/")
    assert server["args"][:2] == ["--tee", "sev-snp"]  # the overlay's own flags are kept


def test_base_alone_never_simulates(render: Render) -> None:
    docs = render(KUBERNETES / "base")
    assert _server(docs)["args"] == ["--tee", "auto", "--host", "0.0.0.0"]


# -- the container image ------------------------------------------------------------------------


def test_dockerfile_matches_the_manifests(rendered: dict[str, Docs]) -> None:
    """The image runs ``blindai serve`` as the numeric non-root user the manifests expect, and
    installs the ``server`` extra from a build context that holds what the wheel needs."""
    dockerfile = (REPO / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    pod = _pod(rendered["simulation"])["securityContext"]
    assert user == [(str(pod["runAsUser"]), str(pod["runAsGroup"]))]
    assert re.search(r'^ENTRYPOINT \["blindai", "serve"\]$', dockerfile, re.M)
    assert "'.[server]'" in dockerfile
    assert re.search(r"^EXPOSE 9923 9924 9925 9926$", dockerfile, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") :][:1] == ["*"]
    for needed in ("pyproject.toml", "README.md", "LICENSE", "src/"):
        assert f"!{needed}" in ignored
        assert re.search(
            rf"^COPY {re.escape(needed.rstrip('/'))}\b|^COPY .*\b{needed}", dockerfile, re.M
        )
