"""retrieval_svc and ranking_svc as real processes (`python -m kindred serve <name>`), as the demo runs them.

Each gets a free loopback port through KINDRED_<NAME>_PORT; ranking finds retrieval through the same
settings. `start_mesh` waits until each reports SERVING on the standard health service (retrieval
first: ranking calls it) and `Mesh.stop` sends SIGTERM, then kills what has not exited in time.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from kindred.config import IN_PROCESS  # retrieval's domain inside the ranking process

SERVICES = ("retrieval", "ranking")  # ranking last: it calls retrieval


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(
    data_dir: Path,
    ports: Mapping[str, int],
    *,
    trace_file: Path | None = None,
    base: Mapping[str, str] | None = None,
    colocated: bool = False,
) -> dict[str, str]:
    """The environment of a service process: no inherited KINDRED_* (the settings reject unknown ones)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("KINDRED_")}
    env.update({"ORT_DISABLE_TELEMETRY": "1", "KINDRED_DATA_DIR": str(data_dir), "KINDRED_HOST": "127.0.0.1"})
    env.update({f"KINDRED_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    if trace_file is not None:
        env["KINDRED_TRACE_FILE"] = str(trace_file)
    if colocated:
        env["KINDRED_RETRIEVAL_TARGET"] = IN_PROCESS
    return env


@dataclasses.dataclass
class Mesh:
    procs: dict[str, subprocess.Popen[bytes]]
    ports: dict[str, int]
    logs: dict[str, Path]
    startup_s: dict[str, float]

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout_s
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


def start_mesh(
    data_dir: Path,
    log_dir: Path,
    *,
    trace_file: Path | None = None,
    cwd: Path | None = None,
    timeout_s: float = 180.0,
    colocated: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> Mesh:
    """Starts retrieval then ranking (`colocated`: ranking alone, retrieval in its process); returns once
    each is SERVING (stops them again on failure). `extra_env`: more KINDRED_* settings for them all."""
    services = ("ranking",) if colocated else SERVICES
    ports = {name: free_port() for name in services}
    env = service_env(data_dir, ports, trace_file=trace_file, colocated=colocated)
    env.update(extra_env or {})
    log_dir.mkdir(parents=True, exist_ok=True)
    mesh = Mesh({}, ports, {}, {})
    try:
        for name in services:
            log_path = log_dir / f"{name}.log"
            mesh.logs[name] = log_path
            fh: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
            t0 = time.monotonic()
            mesh.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "kindred", "serve", name], env=env, cwd=cwd, stdout=fh, stderr=fh
            )
            fh.close()
            wait_serving(mesh.target(name), mesh.procs[name], timeout_s, log_path)
            mesh.startup_s[name] = time.monotonic() - t0
    except BaseException:
        mesh.stop()
        raise
    return mesh


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout_s: float, log_path: Path) -> None:
    from kindred.grpc_client import ServiceExited, wait_until_serving

    try:
        wait_until_serving(target, proc=proc, timeout_s=timeout_s)
    except ServiceExited as exc:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}:\n{tail}") from exc
    except TimeoutError as exc:
        raise TimeoutError(f"{exc} (log: {log_path})") from exc
