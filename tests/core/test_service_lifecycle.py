"""A service process listens at once, says NOT_SERVING while it has nothing to load, and exits on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kindred.v1 import retrieval_pb2, retrieval_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_retrieval_without_a_trained_model_is_alive_but_not_serving(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
    env.update({"KINDRED_DATA_DIR": str(tmp_path), "KINDRED_RETRIEVAL_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "kindred", "serve", "retrieval"], env=env, cwd=REPO)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = None
            deadline = time.monotonic() + 60
            while status is None and time.monotonic() < deadline:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as info:
                retrieval_pb2_grpc.RetrievalServiceStub(channel).Retrieve(
                    retrieval_pb2.RetrieveRequest(fan_id="f1", k=5), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in (info.value.details() or "")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
