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


def _ignore_sigint() -> None:  # as a non-interactive shell starts `cmd &`
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("stop", "started_from"),
    [(signal.SIGTERM, None), (signal.SIGINT, None), (signal.SIGINT, _ignore_sigint)],
    ids=["SIGTERM", "SIGINT", "SIGINT-started-ignoring-it"],
)
def test_a_stop_ends_every_process_it_started(tiny_folder, tmp_path, stop, started_from):
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp_path / "serve.log"  # all the driver prints, shown when it does not start or stop
    with open(log, "wb") as out:
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
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            preexec_fn=started_from,
        )
    try:
        deadline = time.monotonic() + 180
        while True:  # the driver prints "serving on" once the app is deployed
            text = log.read_text(errors="replace")
            serving = next((line for line in text.splitlines() if "florence2: serving on" in line), None)
            if serving is not None:  # it says what Ray writes
                assert "~/.ray/auth_token" in serving and "/tmp/ray/" in serving
                break
            assert proc.poll() is None, text[-2000:]
            assert time.monotonic() < deadline, "Ray Serve did not come up"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
        started = descendants(proc.pid)
        assert started, "Ray started no process below the driver"
        with socket.socket() as s:  # the dashboard's port: off unless --ray-dashboard
            assert s.connect_ex(("127.0.0.1", 8265)) != 0

        proc.send_signal(stop)
        t0 = time.monotonic()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the driver did not exit within 30 s of {stop!r}; it printed:\n{log.read_text()[-3000:]}"
            )
        left = {p for p in started if _cmdline(p)}
        while left and time.monotonic() - t0 < 10:
            time.sleep(0.2)
            left = {p for p in left if _cmdline(p)}
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert not left, {p: _cmdline(p)[:100] for p in left}
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in descendants(proc.pid):
            os.kill(p, signal.SIGKILL)


def test_a_stuck_ray_shutdown_is_given_up_on_in_time():
    """Serve's shutdown waits on its controller without a timeout of its own: the driver waits at most the
    time it is given, then goes on (to kill what is left and exit)."""
    import threading
    from types import SimpleNamespace

    from florence2_runtime.server.ray_app import _shut_down_ray

    release = threading.Event()
    ray = SimpleNamespace(is_initialized=lambda: True, shutdown=lambda: None)
    stuck = SimpleNamespace(shutdown=lambda: release.wait(60))

    t0 = time.monotonic()
    assert _shut_down_ray(ray, stuck, 0.5) is False
    assert time.monotonic() - t0 < 2
    release.set()
    assert _shut_down_ray(ray, SimpleNamespace(shutdown=lambda: None), 5) is True
