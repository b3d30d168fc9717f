"""Fixtures of the end-to-end tests: a real redis-server and a real `taskledger serve`, each on a
free loopback port in a temporary directory, started per test module and stopped after it.

`TASKLEDGER_BIN` names the ledger binary (tests/clients.rs passes Cargo's); without it, or
without `redis-server`, the tests that need them are skipped and say why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
APPS = HERE / "apps"
# Test the working tree's client, whatever the virtualenv holds.
sys.path.insert(0, str(SRC))

#: Seconds a server has to come up.
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM a worker started with `start_new_session=True` (it stops its pool children),
    then SIGKILL whatever is left of its process group after `grace_s`."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(up, START_TIMEOUT_S, "redis-server")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class LedgerServer:
    """`taskledger serve` on a fixed port; `kill()` + `start()` restart it on the same data dir."""

    def __init__(self, binary: str, directory: Path, tokens: str | None = None) -> None:
        self.binary = binary
        self.tokens = tokens
        self.data_dir = directory / "ledger-data"
        self.log_path = directory / "ledger.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        env = dict(os.environ)
        env.pop("TASKLEDGER_TOKENS", None)
        if self.tokens:
            env["TASKLEDGER_TOKENS"] = self.tokens
        self.process = subprocess.Popen(
            [
                self.binary,
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"taskledger serve exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=0.5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(up, START_TIMEOUT_S, "taskledger serve")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/install/00-apt.sh installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ledger_server(tmp_path_factory):
    binary = os.environ.get("TASKLEDGER_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("TASKLEDGER_BIN does not name the taskledger binary (tests/clients.rs sets it)")
    server = LedgerServer(binary, tmp_path_factory.mktemp("ledger"))
    yield server
    server.stop()


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(APPS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env
