"""Shared fixtures: a real `strata` binary on an ephemeral loopback port, per test module."""
import os
import socket
import subprocess
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


class StrataProcess:
    def __init__(self, extra_env=None):
        self.port = free_port()
        env = dict(os.environ)
        env.update({"STRATA_HTTP_LISTEN": '""', "STRATA_LOG_LEVEL": "warn"})
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [strata_bin(), "--port", str(self.port), "--bind", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode())
                time.sleep(0.05)
        raise RuntimeError("strata did not start listening")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def strata():
    p = StrataProcess()
    yield p
    p.stop()
