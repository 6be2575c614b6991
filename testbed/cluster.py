"""A local Kubernetes control plane: etcd + kube-apiserver on loopback, the way envtest starts them.

TLS everywhere, RBAC authorization, an admin client-certificate kubeconfig, and service-account token
signing so tests can run the operator as a restricted ServiceAccount (tokens come from the TokenRequest
API: there is no controller-manager to mint token Secrets). Ports are free ports picked at start; all
state lives in one run directory, which `stop()` removes together with the processes it started.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed.addressing import SERVICE_CLUSTER_NETWORK

# Service ClusterIPs are only allocated, never routed (nothing on the machine gets an address or a route
# in this range); the lab's address chooser never picks it (testbed/addressing.py).
SERVICE_CLUSTER_IP_RANGE = str(SERVICE_CLUSTER_NETWORK)
READY_TIMEOUT_SECONDS = 90.0
STATE_FILE = "cluster.json"
# `make cluster-up` keeps its plane here; test sessions use their own TEST_RUN_PREFIX* directories.
CLI_RUN_DIR = Path("/run/lbpair-cluster")
TEST_RUN_PREFIX = "lbpair-cluster-"


REPO_ROOT = Path(__file__).resolve().parent.parent


def pinned_versions() -> dict[str, str]:
    """hack/versions.env as a mapping, e.g. {"KUBERNETES_VERSION": "v1.37.2", ...}."""
    lines = (REPO_ROOT / "hack" / "versions.env").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def tools_bin_dir() -> Path:
    """Where hack/build-tools.sh put etcd, kube-apiserver, kubectl and helm."""
    configured = os.environ.get("LBPAIR_TOOLS_BIN")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("LBPAIR_CACHE", cache / "lbpair-operator")) / "bin"


def throwaway_run_dir() -> Path:
    """A fresh run directory for a control plane that lives as long as one test session or benchmark
    (`stop_test_control_planes` finds the ones a crash left behind by their prefix)."""
    return Path(tempfile.mkdtemp(prefix=TEST_RUN_PREFIX))


def stop_test_control_planes() -> None:
    """Stop the planes that crashed test sessions left behind (found by their run directories)."""
    for run_dir in Path(tempfile.gettempdir()).glob(f"{TEST_RUN_PREFIX}*"):
        _progress(f"removing leftover control plane {run_dir}")
        ControlPlane(run_dir=run_dir, bin_dir=tools_bin_dir()).stop()


def _progress(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(
    subject: x509.Name,
    issuer: _Issued | None,
    *,
    is_ca: bool = False,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client: bool = False,
) -> _Issued:
    """Issue an ECDSA P-256 certificate, self-signed when `issuer` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names or server_ips:
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in server_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    signing_key = issuer.key if issuer else key
    return _Issued(builder.sign(signing_key, hashes.SHA256()), key)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def kubeconfig_yaml(server: str, ca_file: Path, *, user: str, credentials: dict[str, str]) -> str:
    """A one-context kubeconfig. JSON is valid YAML, so no YAML library is needed."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lbpair-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "lbpair-test", "user": user}}],
        "current-context": user,
    }
    return json.dumps(config, indent=2)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver whose state lives in `run_dir`.

    `with_nodes`: the API server also serves kubelets (testbed/kubenode.py): the ServiceAccount admission
    plugin mounts token volumes into pods (kube-controller-manager then creates the ServiceAccounts it
    needs), and the API server reaches kubelets (logs, exec) with the admin client certificate."""

    run_dir: Path
    bin_dir: Path
    with_nodes: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "admin.kubeconfig"

    @property
    def _state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def _load_state(self) -> dict[str, object] | None:
        try:
            state: dict[str, object] = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return None
        return state

    def is_running(self) -> bool:
        state = self._load_state()
        if state is None:
            return False
        pids = state.get("pids", [])
        return isinstance(pids, list) and all(pid_alive(int(pid)) for pid in pids) and self._ready()

    def start(self) -> None:
        """Start etcd and kube-apiserver and wait until /readyz says ok. Reuses a running plane."""
        if self.is_running():
            _progress(f"already running ({self.kubeconfig})")
            return
        self.stop()
        for tool in ("etcd", "kube-apiserver", "kubectl"):
            if not (self.bin_dir / tool).exists():
                raise FileNotFoundError(f"{self.bin_dir / tool} missing: run hack/build-tools.sh first")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        pki = self.run_dir / "pki"
        pki.mkdir(exist_ok=True)
        self._write_pki(pki)
        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        logs = self.run_dir / "logs"
        logs.mkdir(exist_ok=True)

        _progress(f"starting etcd on 127.0.0.1:{etcd_port}")
        etcd = self._spawn(
            [
                str(self.bin_dir / "etcd"),
                f"--data-dir={self.run_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
                # Test data is disposable; fsync would dominate the run time on a shared disk.
                "--unsafe-no-fsync",
            ],
            logs / "etcd.log",
        )
        server = f"https://127.0.0.1:{api_port}"
        self._save_state({"pids": [etcd], "server": server})
        _progress(f"starting kube-apiserver on {server}")
        apiserver = self._spawn(
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # No endpoints reconciler: it refuses a loopback advertise address and nothing here needs it.
                "--endpoint-reconciler-type=none",
                f"--secure-port={api_port}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                *self._node_flags(pki),
                "--allow-privileged=false",
            ],
            logs / "kube-apiserver.log",
        )
        self._save_state({"pids": [apiserver, etcd], "server": server})
        self.kubeconfig.write_text(
            kubeconfig_yaml(
                server,
                pki / "ca.crt",
                user="admin",
                credentials={
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            )
        )
        self._wait_ready(logs)

    def stop(self) -> None:
        """Stop the processes this plane started (by PID) and remove its run directory."""
        state = self._load_state()
        if state is not None:
            pids = state.get("pids", [])
            for pid in pids if isinstance(pids, list) else []:
                # A stale state file may name a PID the kernel has since reused: check it is ours.
                if command_line(int(pid)).startswith(str(self.bin_dir)):
                    terminate(int(pid))
        if self.run_dir.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.run_dir)], check=True)

    @property
    def server(self) -> str:
        state = self._load_state()
        if state is None:
            raise RuntimeError("control plane is not running")
        return str(state["server"])

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this plane as admin."""
        command = [str(self.bin_dir / "helm"), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this plane (as admin unless another kubeconfig is given)."""
        command = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return result

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig authenticating as ServiceAccount `namespace/name` (created if missing)."""
        self.kubectl("create", "namespace", namespace, check=False)
        self.kubectl("-n", namespace, "create", "serviceaccount", name, check=False)
        token = self.kubectl("-n", namespace, "create", "token", name, "--duration=24h").stdout.strip()
        path = self.run_dir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(
            kubeconfig_yaml(
                self.server, self.run_dir / "pki" / "ca.crt", user=name, credentials={"token": token}
            )
        )
        return path

    @property
    def pki_dir(self) -> Path:
        """ca.crt, the admin client certificate, and sa.key/sa.pub (service-account token signing)."""
        return self.run_dir / "pki"

    def _node_flags(self, pki: Path) -> list[str]:
        if self.with_nodes:
            return [
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                # The node's host name resolves nowhere here; its InternalIP is the address it serves on.
                "--kubelet-preferred-address-types=InternalIP",
            ]
        # No controller-manager mints token Secrets or default ServiceAccounts; tests create both.
        return ["--disable-admission-plugins=ServiceAccount"]

    def _write_pki(self, pki: Path) -> None:
        ca = _issue(_name("lbpair-test-ca"), None, is_ca=True)
        apiserver = _issue(
            _name("kube-apiserver"),
            ca,
            server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            server_ips=("127.0.0.1", str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))),
        )
        admin = _issue(_name("admin", "system:masters"), ca, client=True)
        for stem, issued in (("ca", ca), ("apiserver", apiserver), ("admin", admin)):
            (pki / f"{stem}.crt").write_bytes(_pem_cert(issued.cert))
            key_path = pki / f"{stem}.key"
            key_path.write_bytes(_pem_key(issued.key))
            key_path.chmod(0o600)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_pem_key(sa_key))
        (pki / "sa.key").chmod(0o600)
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _spawn(self, argv: list[str], log_path: Path) -> int:
        return spawn_logged(argv, log_path)

    def _save_state(self, state: dict[str, object]) -> None:
        self._state_path.write_text(json.dumps(state))

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.run_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 - https to our own loopback apiserver
                f"{self.server}/readyz", context=self._ssl_context(), timeout=2
            ) as response:
                return bool(response.status == 200)  # noqa: PLR2004
        except (OSError, RuntimeError):
            return False

    def _wait_ready(self, logs: Path) -> None:
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_SECONDS:
            if self._ready():
                _progress(f"ready in {time.monotonic() - started:.1f} s; KUBECONFIG={self.kubeconfig}")
                return
            state = self._load_state() or {}
            pids = state.get("pids", [])
            dead = [pid for pid in (pids if isinstance(pids, list) else []) if not pid_alive(int(pid))]
            if dead:
                break
            time.sleep(0.5)
        tails = "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            for log in sorted(logs.glob("*.log"))
        )
        self.stop()
        raise RuntimeError(
            f"control plane did not become ready within {READY_TIMEOUT_SECONDS:.0f} s\n{tails}"
        )


def spawn_logged(argv: list[str], log_path: Path) -> int:
    """Start `argv` in the background with its output appended to `log_path`; returns its PID."""
    with log_path.open("ab") as log:
        # A session of its own: a Ctrl-C in the terminal must not kill the test bed half-way.
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still answers signal 0; it is dead for our purposes.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return status != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def terminate(pid: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after a grace period; only ever called with PIDs we started."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    # Not our child when an earlier `cluster up` started it: then init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
