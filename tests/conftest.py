import json
from pathlib import Path

import pytest

from shaping.config import Project

MOCK_TOML = """
[models.judge]
provider = "mock"
model = "mock-judge"

[models.judge.params]
temperature = 0.2

[models.writer]
provider = "mock"
model = "mock-writer"

[models.flaky]
provider = "mock"
model = "mock-flaky"
[models.flaky.options]
fail_when_contains = "FAIL"
"""


def write_project(root: Path, toml: str = MOCK_TOML) -> Project:
    (root / "shaping.toml").write_text(toml)
    (root / "identity").mkdir(exist_ok=True)
    (root / "identity" / "NARRATIVE.md").write_text("# N\n- fact one\n- fact two\n- fact three\n")
    (root / "pipelines").mkdir(exist_ok=True)
    return Project.load(root)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path)


def read_jsonl(path: Path) -> list[dict]:
    """Lines of an output, the JSON-text parts of annotated lines decoded (see
    shaping.samples.ENCODED_FIELDS; tests/test_datasets.py checks the raw form)."""
    from shaping.samples import decode_annotated

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [decode_annotated(r) if isinstance(r, dict) and "steps" in r else r for r in rows]


def read_errors(path: Path) -> list[dict]:
    """Error records, unwrapped: each line is exactly `{"__ERROR__": {...}}`. No file: no
    failed record (a run writes none then)."""
    if not path.exists():
        return []
    records = read_jsonl(path)
    assert all(list(r) == ["__ERROR__"] and isinstance(r["__ERROR__"], dict) for r in records), records[:1]
    return [r["__ERROR__"] for r in records]
