"""Fixtures that start the real `berth` binary on a free port with a fresh data directory.

Needs BERTH_TEST_GGUF (SmolLM2-135M-Instruct.Q4_1.gguf; scripts/fetch-model.sh prints its path) and the
release binary (BERTH_BIN, default target/release/berth). Without them the tests fail, never skip.

With BERTH_TEST_DATABASE=postgres every server of the suite keeps its tables in PostgreSQL instead of
SQLite: a database of its own per data directory (a restarted server finds its database again), made
through BERTH_TEST_POSTGRES (an admin URL; scripts/start-postgres.sh prints one). `scripts/test.sh`
runs the whole suite both ways.
"""
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time

import pytest
import requests_shim as http

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARM_VERSION = "2024-10-01"
OPENAI_VERSION = "2024-10-21"


def berth_bin():
    path = pathlib.Path(os.environ.get("BERTH_BIN", ROOT / "target" / "release" / "berth"))
    assert path.exists(), f"{path} is missing: run `cargo build --release` first"
    return str(path)


def model_path():
    path = os.environ.get("BERTH_TEST_GGUF")
    assert path and os.path.exists(path), "set BERTH_TEST_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-model.sh)"
    return path


def on_postgres():
    return os.environ.get("BERTH_TEST_DATABASE", "sqlite") == "postgres"


def postgres_admin():
    url = os.environ.get("BERTH_TEST_POSTGRES")
    assert url, "set BERTH_TEST_POSTGRES to an admin URL (scripts/start-postgres.sh prints one)"
    return url


def new_database(name):
    """A fresh, empty PostgreSQL database; returns its URL."""
    admin = postgres_admin()
    subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True, capture_output=True)
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    base, _, _ = admin.rpartition("/")
    return f"{base}/{name}"


def database_url_for(data_dir):
    """The database of the server on `data_dir`: made on first use, found again on a restart."""
    name = "berth_it_" + hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:20]
    marker = os.path.join(data_dir, ".test-database")
    if not os.path.exists(marker):
        url = new_database(name)
        open(marker, "w").write(url)
    return open(marker).read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `berth serve`, with helpers for its two planes."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = open(os.path.join(data_dir, "server.log"), "ab")
        # HTTPS servers: an SSL context trusting the server's certificate, once it exists.
        self.ssl = None

    def start(self, wait_ready=True, args=(), cafile=None):
        """`cafile`: serve HTTPS (the args carry the TLS flags); trust this certificate, or by default the
        self-signed one the server makes under DATA_DIR/tls."""
        import ssl

        tls = any(a.startswith("--tls") for a in args)
        if tls:
            self.url = f"https://127.0.0.1:{self.port}"
        probe = ssl._create_unverified_context() if tls else None
        env = dict(os.environ, BERTH_DATA_DIR=self.data_dir, BERTH_LOG="info")
        if on_postgres() and not any(a.startswith("--database") for a in args):
            env["BERTH_DATABASE_URL"] = database_url_for(self.data_dir)
        self.proc = subprocess.Popen(
            [berth_bin(), "serve", "--listen", f"127.0.0.1:{self.port}", *args], env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, f"berth serve exited: {self.read_log()[-2000:]}"
            try:
                status, _, _ = http.request("GET", self.url + "/healthz", context=probe)
                if status == 200 or (status == 503 and not wait_ready):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("berth serve did not become ready")
        if tls:
            self.ssl = ssl.create_default_context(cafile=cafile or os.path.join(self.data_dir, "tls", "cert.pem"))
        self.creds = json.load(open(os.path.join(self.data_dir, "credentials.json")))
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("berth serve did not stop within 30 s of SIGTERM")
        self.proc = None

    def read_log(self):
        self.log.flush()
        return open(os.path.join(self.data_dir, "server.log"), errors="replace").read()

    def database_bytes(self):
        """Everything the database holds at rest: SQLite's files, or a dump of PostgreSQL's rows."""
        if on_postgres():
            url = database_url_for(self.data_dir)
            return subprocess.run(["pg_dump", "--data-only", url], check=True, capture_output=True).stdout
        return b"".join(open(os.path.join(self.data_dir, f), "rb").read() for f in os.listdir(self.data_dir) if f.startswith("berth.db"))

    # --- helpers -----------------------------------------------------------------------------
    @property
    def token(self):
        return self.creds["adminToken"]

    @property
    def account_path(self):
        c = self.creds
        return (
            f"/subscriptions/{c['subscriptionId']}/resourceGroups/{c['resourceGroup']}"
            f"/providers/Microsoft.CognitiveServices/accounts/{c['account']}"
        )

    def arm(self, method, path, body=None, token=None, api_version=ARM_VERSION, raw=None, headers=None):
        sep = "&" if "?" in path else "?"
        url = self.url + path + (f"{sep}api-version={api_version}" if api_version else "")
        h = {"Authorization": f"Bearer {token or self.token}"}
        h.update(headers or {})
        return http.request(method, url, body=body, raw=raw, headers=h, context=self.ssl)

    def keys(self):
        status, body, _ = self.arm("POST", self.account_path + "/listKeys")
        assert status == 200, body
        return body

    def cli(self, *args, check=True):
        env = dict(os.environ, BERTH_DATA_DIR=self.data_dir)
        env.pop("BERTH_ENDPOINT", None)
        env.pop("BERTH_TOKEN", None)
        p = subprocess.run([berth_bin(), *args], env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert p.returncode == 0, f"berth {' '.join(args)} failed: {p.stderr}"
        return p

    def deploy(self, name, model, wait=True, sku="Standard", capacity=50):
        body = {"sku": {"name": sku, "capacity": capacity}, "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}}}
        status, created, headers = self.arm("PUT", f"{self.account_path}/deployments/{name}", body)
        assert status in (200, 201), created
        if wait:
            return self.wait_deployment(name)
        return created, headers

    def wait_deployment_at(self, account_path, name, timeout=180, token=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, d, _ = self.arm("GET", f"{account_path}/deployments/{name}", token=token)
            assert status == 200, d
            if d["properties"]["provisioningState"] in ("Succeeded", "Failed"):
                return d
            time.sleep(0.1)
        raise AssertionError(f"deployment {name} did not finish provisioning")

    def wait_deployment(self, name, timeout=180):
        return self.wait_deployment_at(self.account_path, name, timeout)


@pytest.fixture(scope="session")
def gguf():
    return model_path()


@pytest.fixture(scope="session")
def adapter_dir(gguf, tmp_path_factory):
    """A PEFT LoRA adapter on q, v, gate and down of SmolLM2, with random but strong factors."""
    from adapters import make_adapter

    path = tmp_path_factory.mktemp("adapter")
    make_adapter(str(path), gguf, rank=8, alpha=16, targets=["q_proj", "v_proj", "gate_proj", "down_proj"], seed=1, scale=0.08)
    return str(path)


# SDK clients of the session server retry a 429 after its Retry-After, as the SDK does by default: the
# whole session shares the `smol` deployment's request limit (50 per 10 s), which a fast engine reaches.
SHARED_SERVER_RETRIES = 4


@pytest.fixture(scope="session")
def server(gguf, adapter_dir):
    """One server for the read-mostly tests: base model `smollm2` deployed as `smol`, and an adapter
    fine-tune deployed as `smol-ft`."""
    data_dir = tempfile.mkdtemp(prefix="berth-it-")
    s = Server(data_dir).start()
    s.cli("base-model", "add", "smollm2", "--path", gguf)
    imported = json.loads(s.cli("model", "import", "--base", "smollm2", "--adapter", adapter_dir).stdout)
    s.ft_model = imported["id"]
    assert s.deploy("smol", "smollm2")["properties"]["provisioningState"] == "Succeeded"
    assert s.deploy("smol-ft", s.ft_model)["properties"]["provisioningState"] == "Succeeded"
    yield s
    s.stop()


@pytest.fixture
def fresh_server(gguf):
    """A server of the test's own, for restarts and failures."""
    data_dir = tempfile.mkdtemp(prefix="berth-it-")
    s = Server(data_dir).start()
    s.cli("base-model", "add", "smollm2", "--path", gguf)
    yield s
    s.stop()
