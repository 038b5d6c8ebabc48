"""``florence2 serve --ray`` stops everything it started (issue #29): SIGTERM or Ctrl-C ends the driver and every
process below it within 10 s, and Ray's dashboard stays off unless asked for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve needs the 'ray' extra")
httpx = pytest.importorskip("httpx")

from florence2_runtime.server.background import free_port
from florence2_runtime.server.ray_app import descendants

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc"),
]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_ends_every_process_it_started(tiny_folder, tmp_path, stop):
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "florence2_runtime.cli",
            "serve",
            str(tiny_folder),
            "--ray",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:  # the driver prints this once the app is deployed
            if "florence2: serving on" in line:
                assert "~/.ray/auth_token" in line and "/tmp/ray/" in line  # it says what Ray writes
                break
            assert time.monotonic() < deadline, "Ray Serve did not come up"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
        started = descendants(proc.pid)
        assert started, "Ray started no process below the driver"
        with socket.socket() as s:  # the dashboard's port: off unless --ray-dashboard
            assert s.connect_ex(("127.0.0.1", 8265)) != 0

        proc.send_signal(stop)
        t0 = time.monotonic()
        proc.wait(timeout=30)
        left = {p for p in started if _cmdline(p)}
        while left and time.monotonic() - t0 < 10:
            time.sleep(0.2)
            left = {p for p in left if _cmdline(p)}
        assert proc.returncode == 0
        assert not left, {p: _cmdline(p)[:100] for p in left}
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in descendants(proc.pid):
            os.kill(p, signal.SIGKILL)
