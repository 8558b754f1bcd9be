"""Measure on a remote device through TVM's own RPC tracker, without ever hanging.

TVM's client retries a refused tracker for 60 s, waits forever on a port that accepts but
does not answer, and a request for a key no server offers queues forever. Each of those
becomes a one-line :class:`UserError` within ``timeout_s`` here.
"""
from __future__ import annotations

import socket
import struct
import tempfile
import threading
import types
from pathlib import Path
from typing import Any

from hwprune_fx.errors import UserError

__all__ = ["parse_tracker", "open_session", "load_remote_vm", "remote_threads", "rpc_runner",
           "CONNECT_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 600  # the server drops a session that outlives this
_TRACKER_MAGIC = 0x2F271  # tvm.rpc.base.RPC_TRACKER_MAGIC


def parse_tracker(spec: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; a malformed spec is the user's mistake."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"rpc tracker must be HOST:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


def _check_tracker(host: str, port: int, timeout_s: float) -> None:
    """Connect and exchange the tracker's magic number, all within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        raise UserError(f"RPC tracker {host}:{port} unreachable: {exc.strerror or exc}") from None
    if len(reply) != 4 or struct.unpack("<i", reply)[0] != _TRACKER_MAGIC:
        raise UserError(f"{host}:{port} is not a TVM RPC tracker")


def open_session(tvm: types.ModuleType, tracker: str, key: str,
                 timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A session on a free server registered under ``key`` at ``tracker``."""
    from tvm import rpc

    host, port = parse_tracker(tracker)
    _check_tracker(host, port, timeout_s)
    client = rpc.connect_tracker(host, port)
    queues = client.summary().get("queue_info", {})
    if key not in queues:
        client.close()
        offered = ", ".join(sorted(queues)) or "none"
        raise UserError(f"no RPC server under key {key!r} at {tracker} (keys: {offered})")
    result: dict[str, Any] = {}

    def request() -> None:
        try:
            result["session"] = client.request(key, priority=1, session_timeout=SESSION_TIMEOUT_S,
                                               max_retry=1)
        except Exception as exc:  # noqa: BLE001  (handed to the caller's thread)
            result["error"] = exc

    worker = threading.Thread(target=request, name="hwprune-rpc-request", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        client.close()  # unblocks the waiting request
        raise UserError(f"no free RPC server under key {key!r} at {tracker} within {timeout_s:g} s")
    if "error" in result:
        raise UserError(f"RPC request for {key!r} at {tracker} failed: {result['error']}")
    return result["session"]


def load_remote_vm(tvm: types.ModuleType, session: Any, executable: Any, name: str) -> tuple[Any, Any]:
    """Upload ``executable`` as a shared library and open a Relax VM on the remote CPU."""
    from tvm import relax

    with tempfile.TemporaryDirectory(prefix="hwprune-rpc-") as tmp:
        path = Path(tmp) / f"{name}.so"
        executable.export_library(str(path))
        session.upload(str(path))
    dev = session.cpu()
    return relax.VirtualMachine(session.load_module(f"{name}.so"), dev), dev


def remote_threads(session: Any) -> int:
    """How many threads the remote TVM runtime runs (set by whoever started the server)."""
    return int(session.get_function("runtime.NumThreads")())


def rpc_runner(tvm: types.ModuleType, tracker: str, key: str, initializer: Any) -> Any:
    """A MetaSchedule runner that measures tuning candidates on the remote device."""
    from tvm.s_tir import meta_schedule as ms

    host, port = parse_tracker(tracker)
    _check_tracker(host, port, CONNECT_TIMEOUT_S)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                 session_timeout_sec=60)
    return ms.runner.RPCRunner(rpc_config=config, initializer=initializer)
