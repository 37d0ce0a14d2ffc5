"""docs/deploy-sentinel.md names only parameters and outputs the templates have, for the right template."""

from __future__ import annotations

import re
from pathlib import Path

from opsentinel.azure import build_function_app_template, build_template

DOC = Path(__file__).resolve().parents[3] / "docs" / "deploy-sentinel.md"


def sections() -> dict[str, str]:
    """Level-2 sections by heading."""
    parts = re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {part.splitlines()[0]: part for part in parts[1:]}


def templates_for(heading: str) -> list[dict]:
    if heading.startswith("3B"):
        return [build_function_app_template()]
    if heading.startswith("3A"):
        return [build_template()]
    return [build_template(), build_function_app_template()]


def parameters_used(text: str) -> set[str]:
    names = set()
    for match in re.finditer(r"--parameters((?:\s*\\\n)?(?:\s+[A-Za-z]+=\S+)+)", text):
        names |= set(re.findall(r"([A-Za-z]+)=", match.group(1)))
    # key=value pairs named in prose, e.g. `deployTable=false`, `functionAppLocation=ANOTHER-REGION`
    names |= {m for m in re.findall(r"`([a-z][A-Za-z]+)=[^`]*`", text) if not m.startswith("OP_")}
    return names


def table_parameters(text: str) -> set[str]:
    """First-column names of `| parameter | ...` tables."""
    names: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if line.startswith("| parameter |"):
            in_table = True
        elif in_table and line.startswith("|"):
            names |= set(re.findall(r"`([A-Za-z]+)`", line.split("|")[1]))
        else:
            in_table = False
    return names


def test_the_page_has_the_sections_an_admin_follows() -> None:
    headings = list(sections())
    for start in ("1.", "2.", "3A.", "3B.", "4.", "5.", "6.", "7."):
        assert any(h.startswith(start) for h in headings), start


def test_every_parameter_the_docs_use_exists_in_that_sections_template() -> None:
    checked = 0
    for heading, text in sections().items():
        declared = set().union(*(t["parameters"] for t in templates_for(heading)))
        used = parameters_used(text) | table_parameters(text)
        assert used <= declared, (heading, used - declared)
        checked += len(used)
    assert checked > 30


def test_every_output_the_docs_query_or_name_exists() -> None:
    for heading, text in sections().items():
        outputs = set().union(*(t["outputs"] for t in templates_for(heading)))
        queried = set(re.findall(r"properties\.outputs\.([A-Za-z]+)", text))
        assert queried <= outputs, (heading, queried - outputs)
    both = set(build_template()["outputs"]) | set(build_function_app_template()["outputs"])
    listed = re.findall(r"^\| `([A-Za-z]+)` \| (?:`--|the )", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert listed and set(listed) <= both


def test_every_template_parameter_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for template in (build_template(), build_function_app_template()):
        missing = [name for name in template["parameters"] if f"`{name}`" not in text]
        assert missing == []
