"""Helpers to run the Functions app as plain Python (the Functions host cannot be installed here).

`app_dir` extracts the deployment zip `op-sentinel azure package` builds; `load_app` imports its
function_app.py as the Python worker would; `functions` gives its indexed functions by name. The
objects the worker would pass (the timer request and queue message: the package's concrete classes,
which its converters build from the host's data; the output binding and the invocation context: its
small interfaces, implemented here) are what the functions get on Azure.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
import zipfile
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from opsentinel.azure.package import build_package
from opsentinel.cycle import CycleReport
from opsentinel.functions import AppHost, TickReport

# What the app's AppHost returned to the function being called (the function itself returns None).
_returned: ContextVar[list[Any]] = ContextVar("returned")


def app_dir(where: Path, *, function_timeout: str | None = None, config: Path | None = None) -> Path:
    """The app as deployed: the package built and extracted into `where`; optionally with another
    functionTimeout in its host.json."""
    where.mkdir(parents=True, exist_ok=True)
    built = build_package(where.with_suffix(".zip"), config=config)
    with zipfile.ZipFile(built.path) as archive:
        archive.extractall(where)
    if function_timeout is not None:
        host = json.loads((where / "host.json").read_text())
        host["functionTimeout"] = function_timeout
        (where / "host.json").write_text(json.dumps(host))
    return where


def load_app(root: Path) -> ModuleType:
    """Import root/function_app.py under a name of its own (each app directory is a separate app)."""
    spec = importlib.util.spec_from_file_location(
        f"function_app_{uuid.uuid4().hex}", root / "function_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def functions(module: ModuleType) -> dict[str, Any]:
    """The app's indexed functions (azure.functions Function objects) by name."""
    return {f.get_function_name(): f for f in module.app.get_functions()}


@dataclass
class Context:
    """What the worker passes as `context: func.Context` (the parts the app reads)."""

    function_name: str = "tick"
    invocation_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class Out(func.Out[list[str]]):
    """The queue output binding: what the function sets is what the host would enqueue."""

    def __init__(self) -> None:
        self.value: list[str] | None = None

    def set(self, val: list[str]) -> None:
        self.value = val

    def get(self) -> list[str]:
        return self.value or []


class _Recording:
    """Stands in for the app's `host`: passes each call on and keeps what it returned."""

    def __init__(self, inner: AppHost) -> None:
        self.inner = inner

    async def tick(self, *args: Any) -> TickReport:
        report = await self.inner.tick(*args)
        _returned.get().append(report)
        return report

    async def work(self, *args: Any) -> CycleReport | None:
        report = await self.inner.work(*args)
        _returned.get().append(report)
        return report


class App:
    """One deployed app: call its indexed functions the way the host does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.module = load_app(root)
        self.functions = functions(self.module)
        self.host: AppHost = self.module.host
        self.module.host = _Recording(self.host)

    async def tick(self, *, past_due: bool = False) -> tuple[Out, TickReport]:
        """One timer invocation: what it enqueued, and what its cycle did."""
        out, returned = Out(), []
        _returned.set(returned)
        await self.functions["tick"].get_user_function()(
            TimerRequest(past_due=past_due), out, Context("tick")
        )
        return out, returned[0]

    async def work(self, body: str, *, message_id: str | None = None, dequeue_count: int = 1) -> Any:
        """One queue invocation for a message with `body`: what its cycle did (None: nothing)."""
        message = QueueMessage(id=message_id or str(uuid.uuid4()), body=body, dequeue_count=dequeue_count)
        returned: list[Any] = []
        _returned.set(returned)
        await self.functions["work"].get_user_function()(message, Context("work"))
        return returned[0]
