"""Shared fixtures: a real `strata` binary on an ephemeral loopback port, per test module.

Also: `redis_server`, a real `redis-server` (the reference for differential tests) on its own
free port, and `wait_until`, the deadline-bounded poll every timing-dependent test uses instead
of a blind sleep.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strata_bin():
    path = os.environ.get("STRATA_BIN") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target", "debug", "strata"
    )
    if not os.path.exists(path):
        raise RuntimeError(f"strata binary not found at {path}: run `cargo build` first")
    return path


def wait_until(predicate, timeout=5.0, interval=0.01, message="condition"):
    """Polls `predicate` until it returns a truthy value (which is returned) or `timeout` seconds
    pass, then fails the test naming `message` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message} (last value: {value!r})")
        time.sleep(interval)


def _wait_listening(proc, port, what, log_path):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited at start:\n{_read(log_path)}")
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not start listening on {port}:\n{_read(log_path)}")


def _terminate(proc):
    """SIGTERM, then SIGKILL if the process has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class StrataProcess:
    """The real binary on a free loopback port. `extra_env` sets config through
    `STRATA_<SECTION>_<KEY>` variables; `args` are extra command-line arguments.
    stderr goes to a temporary file (never a pipe nobody reads, which would stall the server
    once full); `log()` returns it."""

    def __init__(self, extra_env=None, args=()):
        self.port = free_port()
        env = dict(os.environ)
        env.update({"STRATA_HTTP_LISTEN": '""', "STRATA_LOG_LEVEL": "warn"})
        env.update(extra_env or {})
        fd, self.log_path = tempfile.mkstemp(prefix="strata-test-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(
                [strata_bin(), "--port", str(self.port), "--bind", "127.0.0.1", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            _wait_listening(self.proc, self.port, "strata", self.log_path)
        except Exception:
            self.stop()
            raise

    def log(self):
        return _read(self.log_path)

    def stop(self):
        _terminate(self.proc)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class RedisServerProcess:
    """A real `redis-server` (no persistence) on a free loopback port: the reference that the
    differential tests compare Strata with."""

    def __init__(self, binary=None, extra_args=(), port=None):
        binary = binary or shutil.which("redis-server") or "redis-server"
        # `port`: a given port, e.g. to restart an upstream where its clients expect it.
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-ref-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", self.log_path, "--daemonize", "no", *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(self.proc, self.port, "redis-server", self.log_path)
        except Exception:
            self.stop()
            raise

    def kill(self):
        """SIGKILL, as a crash would: no clean shutdown, clients see their connections reset."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        _terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def against_redis():
    """STRATA_TEST_AGAINST_REDIS=1 points the `strata` fixture at a real redis-server instead:
    a check of the tests themselves (every test that expects Redis's behaviour must pass)."""
    return os.environ.get("STRATA_TEST_AGAINST_REDIS") == "1"


@pytest.fixture(scope="module")
def strata():
    p = RedisServerProcess() if against_redis() else StrataProcess()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    p = RedisServerProcess(binary)
    yield p
    p.stop()


PG_BIN = "/usr/lib/postgresql/15/bin"


class PostgresCluster:
    """A real PostgreSQL 15 primary and one streaming replica (pg_basebackup -R) in a temp dir,
    on free loopback ports, trust authentication. PostgreSQL refuses to run as root, so when we
    are root every PostgreSQL program runs as the `postgres` user."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="strata-pg-")
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.ports = {"primary": free_port(), "replica": free_port()}
        self.data = {n: os.path.join(self.dir, n) for n in self.ports}
        self._run("initdb", "-D", self.data["primary"], "-U", "postgres", "--auth=trust")
        self._start("primary")
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports["primary"]), "-U",
            "postgres", "-D", self.data["replica"], "-R", "-X", "stream",
        )
        self._start("replica")

    def _run(self, program, *args):
        subprocess.run(
            [*self.as_pg, os.path.join(PG_BIN, program), *args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def _start(self, name):
        opts = (
            f"-p {self.ports[name]} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c fsync=off -c wal_level=replica"
        )
        self._run(
            "pg_ctl", "-D", self.data[name], "-l", os.path.join(self.dir, f"{name}.log"),
            "-w", "-o", opts, "start",
        )

    def url(self, name):
        return f"postgres://postgres@127.0.0.1:{self.ports[name]}/postgres"

    def psql(self, name, sql):
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.ports[name]), "-U", "postgres", "-d",
             "postgres", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def stop(self):
        for name in ("replica", "primary"):
            subprocess.run(
                [*self.as_pg, os.path.join(PG_BIN, "pg_ctl"), "-D", self.data[name], "-m",
                 "immediate", "stop"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    if not os.path.exists(os.path.join(PG_BIN, "initdb")):
        pytest.skip("PostgreSQL 15 is not installed (scripts/test installs it)")
    cluster = PostgresCluster()
    yield cluster
    cluster.stop()
