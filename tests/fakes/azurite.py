"""Azurite, the Azure Storage emulator, started by the tests on loopback.

`make install-test` installs the npm package (pinned by tests/azurite/package-lock.json) into
.azurite/. Tests that need it ask for the `azurite` fixture (tests/conftest.py): one in-memory
instance for the whole session, a fresh container per test. `Azurite` can also be started on its own
with data on disk, and stopped and started again on the same port mid-test (storage unavailable,
then back with everything it held).

Without Node.js the tests that need Azurite are skipped with that reason; with Node.js but no
.azurite/ they fail and say to run `make install-test` (so `make test` never skips them quietly).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".azurite" / "node_modules" / ".bin"
ACCOUNT = "devstoreaccount1"
# The emulator's published development key: the same in every Azurite, not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(rb"successfully listens on https?://[^:\s]+:(\d+)")
_SERVICES = {"blob": "azurite-blob", "queue": "azurite-queue"}


def require_azurite() -> None:
    """Skip (no Node.js) or fail (Node.js but Azurite not installed) unless Azurite can run."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the Azurite (Blob state) tests need node and npm")
    if not (BIN / "azurite-blob").exists():
        pytest.fail("Azurite is not installed in .azurite/: run `make install-test`", pytrace=False)


class Azurite:
    """One Azurite service process (`blob` or `queue`) on 127.0.0.1.

    `workdir` holds its log (and its data unless `in_memory`). The port is chosen by Azurite on the
    first start and kept for every restart, so clients keep their connection string.
    """

    def __init__(self, workdir: Path, service: str = "blob", *, in_memory: bool = True) -> None:
        self.workdir = workdir
        self.service = service
        self.in_memory = in_memory
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    # addresses ---------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The account endpoint, e.g. http://127.0.0.1:PORT/devstoreaccount1."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        kind = "BlobEndpoint" if self.service == "blob" else "QueueEndpoint"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"{kind}={self.endpoint};"
        )

    def state_url(self, container: str | None = None) -> str:
        """A `--state` URL for `container` (a fresh random one by default)."""
        return f"{self.endpoint}/{container or 'c' + uuid.uuid4().hex[:12]}"

    # life --------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> Azurite:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        log_path = self.workdir / f"azurite-{self.service}-{self._starts}.log"
        args = [
            str(BIN / _SERVICES[self.service]),
            f"--{self.service}Host",
            "127.0.0.1",
            f"--{self.service}Port",
            str(self.port),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ]
        if self.in_memory:
            args.append("--inMemoryPersistence")
        else:
            args += ["--location", str(self.workdir / "data")]
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _LISTENING.search(log_path.read_bytes())
            if found:
                self.port = int(found.group(1))
                break
            if self._proc.poll() is not None:
                raise RuntimeError(f"Azurite exited {self._proc.returncode}: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"Azurite did not start in {timeout:g} s: {log_path.read_text()[-2000:]}")
        self._wait_answering(deadline)
        return self

    def _wait_answering(self, deadline: float) -> None:
        while True:
            try:
                con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                con.request("GET", f"/{ACCOUNT}?comp=list")
                con.getresponse().read()  # 403 without a signature: it answers
                con.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process (its port refuses connections until `start`)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
