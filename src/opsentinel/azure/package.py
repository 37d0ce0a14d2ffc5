"""`op-sentinel azure package`: the zip that `az functionapp deployment source config-zip` deploys.

The zip holds, at its root:

- `function_app.py` and `host.json` (opsentinel/azure/functionapp/): the triggers and the host's settings;
- `opsentinel/`: this op-sentinel's own code, as installed here (pure Python), so what was tested is
  what runs, and nothing named op-sentinel is ever fetched from a package index;
- `requirements.txt`: op-sentinel's dependencies, pinned to the versions installed here, and
  azure-functions;
- `op-sentinel.toml`, when given: the [[account]] tables of a deployment with many accounts.

It relies on the **remote build**: deploying it to a Python app on Flex Consumption, Azure installs
`requirements.txt` on Linux for the app's Python version (`az functionapp deployment source config-zip`
asks for it by default for Python on Flex; `--build-remote true` says so explicitly). Nothing is
downloaded to build the zip, and no platform wheels (duckdb, pyarrow, orjson, cryptography, pydantic-core)
from this machine end up on a host of another architecture or Python version.

The zip is reproducible: the same inputs give the same bytes (sorted entries, fixed timestamps).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import opsentinel
from opsentinel import __version__
from opsentinel.errors import ConfigError

__all__ = ["APP_FILES", "PackageInfo", "build_package", "requirements_txt"]

APP_DIR: Final = Path(__file__).with_name("functionapp")
APP_FILES: Final = ("function_app.py", "host.json")
AZURE_FUNCTIONS_RANGE: Final = "azure-functions>=1.20,<2"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")
_SKIP_PARTS: Final = {"__pycache__"}
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)  # zip's earliest time: fixed, so the same inputs give the same zip


@dataclass(frozen=True)
class PackageInfo:
    path: Path
    files: tuple[str, ...]
    size: int


def requirements_txt() -> str:
    """op-sentinel's runtime dependencies pinned to the versions installed here, and azure-functions."""
    try:
        declared = importlib.metadata.requires("op-sentinel") or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "op-sentinel is not installed as a package here (pip install op-sentinel)"
        ) from None
    lines = [
        f"# op-sentinel {__version__} on Azure Functions: installed by the remote build. op-sentinel's",
        "# own code is in opsentinel/ next to this file; these are its dependencies, as tested.",
        _pinned(AZURE_FUNCTIONS_RANGE),
    ]
    for spec in declared:
        if ";" in spec and "extra" in spec.split(";", 1)[1]:
            continue  # test and development extras
        lines.append(_pinned(spec.split(";", 1)[0].strip()))
    return "\n".join(lines) + "\n"


def _pinned(spec: str) -> str:
    """`name[extras]==installed version`, or the declared range when it is not installed here."""
    found = _REQUIREMENT.match(spec)
    if found is None:
        return spec
    name, extras = found.group(1), found.group(2) or ""
    try:
        return f"{name}{extras}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return spec


def _package_files() -> Iterator[tuple[str, Path]]:
    """(name in the zip, file) for every file of the installed opsentinel package."""
    root = Path(opsentinel.__file__).resolve().parent
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or _SKIP_PARTS & set(relative.parts) or path.suffix in (".pyc", ".pyo"):
            continue
        yield f"opsentinel/{relative.as_posix()}", path


def check_accounts_config(path: Path) -> bytes:
    """The config file's bytes, after checking it suits a Functions app: valid settings, and tokens
    only from app settings (`token_env`), never a file that would travel inside the zip."""
    from opsentinel.config import load_settings

    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    account = data.get("account")
    tables: list[object] = list(account) if isinstance(account, list) else []
    for where in [data, *tables]:
        if isinstance(where, dict) and "token_file" in where:
            who = f"account {where.get('name')!r}" if where is not data else "the top level"
            raise ConfigError(
                f"config file {path}: {who} sets token_file; in a Functions app a token comes from an app "
                'setting (token_env = "NAME", its value a Key Vault reference), never from a file in the zip'
            )
    # The app settings of the template beat the file; these two stand in for them while checking.
    app_env = {"OP_SENTINEL_SINK": "sentinel", "OP_SENTINEL_STATE": "https://example.blob.core.windows.net/s"}
    load_settings({}, environ=app_env, config_path=path)
    return raw


def build_package(out: Path, *, config: Path | None = None) -> PackageInfo:
    """Write the deployment zip to `out` (see the module docstring)."""
    from opsentinel.functions import CONFIG_FILE

    entries: list[tuple[str, bytes]] = [(name, (APP_DIR / name).read_bytes()) for name in APP_FILES]
    entries.append(("requirements.txt", requirements_txt().encode()))
    if config is not None:
        entries.append((CONFIG_FILE, check_accounts_config(config)))
    entries += [(name, path.read_bytes()) for name, path in _package_files()]
    try:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
    except OSError as exc:
        raise ConfigError(f"cannot write the package to {out}: {exc.strerror or exc}") from None
    return PackageInfo(out, tuple(sorted(name for name, _ in entries)), out.stat().st_size)
