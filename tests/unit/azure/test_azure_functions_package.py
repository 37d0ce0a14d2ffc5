"""The Functions app as `op-sentinel azure package` builds it: the bindings the host indexes, host.json,
and a zip that holds everything the remote build and the worker need (and nothing it must not)."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessageInConverter, QueueMessageOutConverter
from azure.functions.timer import TimerRequestConverter
from tests.functions_app import app_dir, functions, load_app
from typer.testing import CliRunner

from opsentinel.azure.app_template import DEFAULT_SCHEDULE, function_app_settings
from opsentinel.azure.cli import azure_app
from opsentinel.azure.package import build_package
from opsentinel.functions import (
    QUEUE_CONNECTION,
    QUEUE_NAME,
    cycle_deadline,
    function_timeout,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return app_dir(tmp_path_factory.mktemp("pkg") / "app")


def bindings(app: Path) -> dict[str, list[dict[str, typing.Any]]]:
    """Each function's bindings as the worker reports them to the host when it indexes the app."""
    return {
        name: [json.loads(raw) for raw in f.get_raw_bindings()]
        for name, f in functions(load_app(app)).items()
    }


def test_the_host_indexes_a_timer_and_a_queue_trigger_as_the_template_configures_them(app: Path) -> None:
    found = bindings(app)
    assert set(found) == {"tick", "work"}
    (timer,) = [b for b in found["tick"] if b["type"] == "timerTrigger"]
    assert timer["direction"] == "IN"
    # The schedule is the app setting the template sets (NCRONTAB, six fields, seconds first).
    assert timer["schedule"] == "%OP_SENTINEL_SCHEDULE%"
    assert function_app_settings()["OP_SENTINEL_SCHEDULE"] == "[parameters('schedule')]"
    assert len(DEFAULT_SCHEDULE.split()) == 6
    # Catch up once after downtime (the schedule monitor), never run at every start or scale-out.
    assert timer["useMonitor"] is True and timer["runOnStartup"] is False
    (fanout,) = [b for b in found["tick"] if b["type"] == "queue"]
    (trigger,) = found["work"]
    assert trigger["type"] == "queueTrigger"
    for binding in (fanout, trigger):
        assert binding["queueName"] == QUEUE_NAME == "op-sentinel-accounts"
        # "AzureWebJobsStorage": the host storage, reached by identity (AzureWebJobsStorage__accountName)
        assert binding["connection"] == QUEUE_CONNECTION == "AzureWebJobsStorage"
        assert f"{QUEUE_CONNECTION}__accountName" in function_app_settings()
    assert (fanout["direction"], trigger["direction"]) == ("OUT", "IN")


def test_the_worker_accepts_every_parameter_type(app: Path) -> None:
    """The worker matches each parameter's annotation against its binding's converter (a list[str]
    output is refused, typing.List[str] accepted) and runs async functions on its event loop."""
    indexed = functions(load_app(app))
    tick = indexed["tick"].get_user_function()
    work = indexed["work"].get_user_function()
    assert inspect.iscoroutinefunction(tick) and inspect.iscoroutinefunction(work)
    hints = typing.get_type_hints(tick)
    assert TimerRequestConverter.check_input_type_annotation(hints["timer"])
    (out_type,) = typing.get_args(hints["fanout"])
    assert typing.get_origin(hints["fanout"]) is func.Out
    assert QueueMessageOutConverter.check_output_type_annotation(out_type)
    assert QueueMessageInConverter.check_input_type_annotation(typing.get_type_hints(work)["message"])
    assert hints["context"] is func.Context and hints["return"] is type(None)


def test_host_json_bounds_each_invocation_and_spreads_queue_work(app: Path) -> None:
    host = json.loads((app / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    assert host["functionTimeout"] == "00:15:00"
    assert 1 <= host["extensions"]["queues"]["batchSize"] <= 4
    # A cycle stops with time left to commit and release before the host would stop it.
    timeout = function_timeout(app / "host.json")
    assert timeout == 900 and 800 <= cycle_deadline(timeout) < timeout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:10:00", 600), ("1.02:00:00", 93600), ("00:00:40", 40), ("-1", 1800), ("nonsense", 1800)],
)
def test_function_timeout_reads_host_json_timespans(tmp_path: Path, text: str, seconds: float) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": text}))
    assert function_timeout(tmp_path / "host.json") == seconds


def test_the_zip_holds_the_app_the_code_and_pinned_requirements(app: Path) -> None:
    archive = zipfile.ZipFile(app.with_suffix(".zip"))
    names = set(archive.namelist())
    assert {"function_app.py", "host.json", "requirements.txt"} <= names
    source = ROOT / "src" / "opsentinel"
    package = {f"opsentinel/{p.relative_to(source).as_posix()}" for p in source.rglob("*.py")}
    assert package <= names, "some of op-sentinel's code is missing"
    assert "opsentinel/azure/template.py" in names and "opsentinel/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    lines = [x for x in (app / "requirements.txt").read_text().splitlines() if x and not x.startswith("#")]
    names_pinned = {line.split("[")[0].split("==")[0].lower() for line in lines}
    # Nothing named op-sentinel is fetched from an index: its code travels in the zip.
    assert "op-sentinel" not in names_pinned and "azure-functions" in names_pinned
    declared = importlib.metadata.requires("op-sentinel") or []
    runtime = {
        d.split(";")[0].split("[")[0].split(">")[0].split("<")[0].strip().lower()
        for d in declared
        if "extra" not in d
    }
    assert runtime <= names_pinned
    for line in lines:
        name, version = line.split("==")
        assert version == importlib.metadata.version(name.split("[")[0]), line


def test_the_package_is_reproducible(tmp_path: Path) -> None:
    one, two = build_package(tmp_path / "one.zip"), build_package(tmp_path / "two.zip")
    assert one.path.read_bytes() == two.path.read_bytes()


def test_the_extracted_app_imports_its_own_copy_of_op_sentinel(app: Path) -> None:
    """As on the host: the app root first on sys.path, the dependencies from site-packages."""
    probe = (
        "import function_app, opsentinel; "
        "print(opsentinel.__file__); print(len(function_app.app.get_functions()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=app, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    where, count = done.stdout.split()
    assert Path(where).resolve().is_relative_to(app.resolve()) and count == "2"


def test_accounts_ship_with_the_app_and_take_tokens_only_from_app_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "accounts.toml"
    good.write_text('[[account]]\nname = "acme"\ntoken_env = "ACME_OP_TOKEN"\n')
    result = CliRunner().invoke(
        azure_app, ["package", "--out", str(tmp_path / "a.zip"), "--config", str(good)]
    )
    assert result.exit_code == 0, result.output
    assert "config-zip" in result.stderr and "--build-remote true" in result.stderr
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert archive.read("op-sentinel.toml") == good.read_bytes()

    bad = tmp_path / "files.toml"
    bad.write_text('[[account]]\nname = "acme"\ntoken_file = "tokens/acme"\n')
    from opsentinel.cli import main

    assert main(["azure", "package", "--out", str(tmp_path / "b.zip"), "--config", str(bad)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "token_env" in line and "acme" in line
    assert not (tmp_path / "b.zip").exists()
