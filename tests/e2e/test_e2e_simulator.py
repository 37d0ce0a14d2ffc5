"""What the simulator shows its user while the connector uses it (simulator bugs found end to end)."""

from __future__ import annotations

import socket
import struct

import pytest

from opsentinel.simulator import SimulatorConfig, SimulatorServer


def test_a_client_dropping_its_connection_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    sim = SimulatorServer(SimulatorConfig(events=1)).start()
    try:
        with socket.create_connection(("127.0.0.1", sim.port)) as conn:
            request = (
                f"GET /api/v2/auth/introspect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {sim.token}\r\n\r\n"
            )
            conn.sendall(request.encode())
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            # Drop the idle keep-alive connection the way a cancelled HTTP client does: a reset.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sim.stop()  # joins the connection threads: anything they print is printed by now

    assert "Traceback" not in capsys.readouterr().err
