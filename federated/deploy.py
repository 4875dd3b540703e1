"""Run a scenario on Flower's deployment engine: a real SuperLink and N SuperNodes on loopback.

``deploy(sc)`` starts ``flower-superlink`` and ``sc.num_clients`` ``flower-supernode`` processes
(node i gets ``partition-id=i``), submits the app of ``federated/app`` with ``flwr run`` (the
scenario travels as JSON in the run config), waits for the ServerApp's results file, and stops
every process it started, by PID (each in its own process group, so the ServerApp/ClientApp
subprocesses Flower spawns go with their parent). A private ``FLWR_HOME`` keeps Flower's config
and state away from the user's.

``deploy_app(app_dir, node_configs, run_config)`` is the same for any Flower App directory with
one SuperNode per node config (the vertical-FL app uses it: federated/vertical_deploy.py).

Insecure (plain HTTP) on loopback by default; ``tls=True`` generates a throw-away CA and server
certificate and runs every connection over TLS. For real machines, see ``federated/app/README``
(TLS certificates, SuperNode authentication).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DeployError
from .scenario import RESULTS_KEY, RUN_CONFIG_KEY, Scenario

APP_DIR = Path(__file__).resolve().parent / "app"
ROOT = Path(__file__).resolve().parent.parent
CONNECTION = "edgelearn-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise DeployError(f"{name} not found; install Flower: pip install 'edgelearn[federated]'")
    return found


@dataclass
class Deployment:
    """The processes of one local deployment and where their logs go."""

    home: Path
    port: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    tls_ca: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.home)
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        # Flower starts helper executables (flower-superexec, flwr-serverapp...) by name
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.home / f"{name}.log"
        fh = open(log, "wb")
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env(), cwd=self.home,
                             start_new_session=True)
        fh.close()
        self.procs[name], self.logs[name] = p, log
        return p

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            name = next(iter(dead))
            tail = self.logs[name].read_text(errors="replace")[-2000:]
            raise DeployError(f"{name} exited with code {dead[name]}; log tail:\n{tail}")

    def descendants(self) -> dict[int, str]:
        """PID -> command of every live process below the ones we started (Linux /proc).

        Flower detaches some helpers (flower-superexec, flwr-serverapp) into their own sessions,
        so process groups alone do not reach them; their parent links do, while the parents live.
        """
        children: dict[int, list[int]] = {}
        for d in Path("/proc").glob("[0-9]*"):
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
        out: dict[int, str] = {}
        todo = [p.pid for p in self.procs.values()]
        while todo:
            for c in children.get(todo.pop(), []):
                if c not in out:
                    try:
                        out[c] = (Path("/proc") / str(c) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    except OSError:
                        continue
                    todo.append(c)
        return out

    def wait_serverapp_exit(self, timeout: float = 15.0) -> None:
        """Let the ServerApp process finish its own shutdown before we pull the SuperLink away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any("flwr-serverapp" in c for c in self.descendants().values()):
            time.sleep(0.3)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM what we started (their groups) and every descendant by PID; SIGKILL leftovers."""
        extra = list(self.descendants())
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)  # the group we created for this PID
                except ProcessLookupError:
                    pass
        for pid in extra:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        while extra and time.monotonic() < deadline:
            extra = [pid for pid in extra if _alive(pid)]
            time.sleep(0.1)
        for pid in extra:
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for its reaper)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def make_tls(home: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a 127.0.0.1/localhost server certificate signed by it (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject: str, key, issuer_name, issuer_key, ca: bool, san=None):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgelearn test CA")])
    ca_cert = cert("edgelearn test CA", ca_key, ca_name, ca_key, True)
    srv_cert = cert("127.0.0.1", srv_key, ca_name, ca_key, False,
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    paths = home / "ca.pem", home / "server.pem", home / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(srv_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def make_node_key(home: Path, name: str) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format: what SuperNode authentication expects."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    priv, pub = home / f"{name}.key", home / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH))
    priv.chmod(0o600)
    return priv, pub


def _write_flower_config(dep: Deployment) -> None:
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f'address = "{dep.address}"']
    if dep.tls_ca is not None:
        lines.append(f'root-certificates = "{dep.tls_ca}"')
    else:
        lines.append("insecure = true")
    (dep.home / "config.toml").write_text("\n".join(lines) + "\n")


def deploy(sc: Scenario, timeout: float = 600.0, tls: bool = False, auth: bool = False,
           keep_home: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Run `sc` on a local SuperLink + `sc.num_clients` SuperNodes; return the ServerApp's results.

    `auth`: SuperNode authentication (implies TLS): each node gets a key pair, registered with
    `flwr supernode register` before it starts; unregistered nodes are refused.
    """
    nodes = [f"partition-id={i} num-partitions={sc.num_clients}" for i in range(sc.num_clients)]
    return deploy_app(APP_DIR, nodes, {RUN_CONFIG_KEY: sc.to_json()}, timeout=timeout, tls=tls, auth=auth,
                      keep_home=keep_home, verbose=verbose)


def deploy_app(app_dir: Path, node_configs: list[str], run_config: dict[str, str], timeout: float = 600.0,
               tls: bool = False, auth: bool = False, keep_home: bool = False,
               verbose: bool = False) -> dict[str, Any]:
    """`flwr run app_dir` on a local SuperLink + one SuperNode per entry of `node_configs`.

    The app's ServerApp must write its results JSON to the run config's ``results-file`` (added
    here); that JSON is returned with a "deployment" entry (address, node count, TLS/auth, the
    PIDs we started -- all stopped when this returns, also on errors).
    """
    tls = tls or auth
    home = Path(tempfile.mkdtemp(prefix="edgelearn-deploy-"))
    dep = Deployment(home=home, port=free_port())
    results_file = home / "results.json"
    try:
        tls_args: list[str] = ["--insecure"]
        node_tls: list[str] = ["--insecure"]
        if tls:
            ca, crt, key = make_tls(home)
            dep.tls_ca = ca
            tls_args = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(crt), "--ssl-keyfile", str(key)]
            node_tls = ["--root-certificates", str(ca)]
        _write_flower_config(dep)
        dep.start("superlink", [_bin("flower-superlink"), *tls_args, "--port", str(dep.port),
                                "--disable-runtime-dependency-installation",
                                *(["--enable-supernode-auth"] if auth else [])])
        _wait_port(dep, dep.port, 60.0)
        for i, node_config in enumerate(node_configs):
            node_auth: list[str] = []
            if auth:
                priv, pub = make_node_key(home, f"supernode-{i}")
                _flwr(dep, ["supernode", "register", str(pub), CONNECTION])
                node_auth = ["--auth-supernode-private-key", str(priv)]
            dep.start(f"supernode-{i}", [_bin("flower-supernode"), *node_tls, *node_auth, "--superlink", dep.address,
                                         "--port", str(free_port()), "--node-config", node_config])
        cfg = " ".join(f"{k}='{v}'" for k, v in {**run_config, RESULTS_KEY: str(results_file)}.items())
        run = _flwr(dep, ["run", str(app_dir), CONNECTION, "--run-config", cfg, "--format", "json"])
        deadline = time.monotonic() + timeout
        while not results_file.exists():
            dep.check_alive()
            if time.monotonic() > deadline:
                raise DeployError(f"no results after {timeout:.0f} s; logs in {home}")
            time.sleep(0.5)
        dep.wait_serverapp_exit()
        results = json.loads(results_file.read_text())
        results["deployment"] = {"superlink": dep.address, "supernodes": len(node_configs), "tls": tls, "auth": auth,
                                 "run": _json_or_text(run.stdout), "pids": {n: p.pid for n, p in dep.procs.items()}}
        return results
    finally:
        dep.stop()
        if verbose:
            for name, log in dep.logs.items():
                print(f"--- {name} ({log})\n{log.read_text(errors='replace')[-1500:]}")
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


def _flwr(dep: Deployment, args: list[str]) -> subprocess.CompletedProcess:
    """Run the `flwr` CLI against this deployment's FLWR_HOME; raise DeployError on failure."""
    res = subprocess.run([_bin("flwr"), *args], env=dep.env(), cwd=dep.home, capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise DeployError(f"flwr {args[0]} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def _json_or_text(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s.strip()


def _wait_port(dep: Deployment, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep.check_alive()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DeployError(f"SuperLink did not open port {port} within {timeout:.0f} s")
