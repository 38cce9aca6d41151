"""Job edits written back to config.json: only the edited job's text changes, atomically, and
an edit never loses a change someone else made to the file meanwhile."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from poller.config.edit import (
    Change,
    ConfigChangedError,
    ConfigConflictError,
    ConfigEditor,
    JobExistsError,
    JobNotFoundError,
)
from poller.config.load import load_config
from poller.errors import ConfigError

HAND_WRITTEN = """{
  "$schema": "./config.schema.json",
  "settings": {"timezone": "UTC"},
  "jobs": [
    {"id": "a", "every": "1h", "integrationIDs": [["x"]]},
    {
      "id": "b",
      "time": "08:00",
      "integrationIDs": [["y"], ["z"]]
    }
  ],
  "environments": {}
}
"""


def editor_on(tmp_path: Path, text: str = HAND_WRITTEN) -> ConfigEditor:
    path = tmp_path / "config.json"
    path.write_text(text)
    return ConfigEditor(path)


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "every": "1h", "integrationIDs": [["x"]], **fields}


def test_create_appends_and_keeps_every_other_byte(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    result = editor.create_job(job("c"))
    text = editor.path.read_text()
    assert result.changed and [j.id for j in result.config.jobs] == ["a", "b", "c"]
    assert text.startswith(HAND_WRITTEN[: HAND_WRITTEN.index("    }\n  ],")])
    assert text.endswith('  ],\n  "environments": {}\n}\n')
    assert (
        '    {\n      "id": "c",\n      "every": "1h",\n      "integrationIDs": [["x"]]\n    }'
        in text
    )
    assert list(json.loads(text)) == ["$schema", "settings", "jobs", "environments"]


def test_delete_then_create_restores_the_file(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    editor.delete_job("a")
    assert [j["id"] for j in json.loads(editor.path.read_text())["jobs"]] == ["b"]
    editor.delete_job("b")
    assert '"jobs": [],' in editor.path.read_text()
    editor.create_job(job("a"))
    assert json.loads(editor.path.read_text())["jobs"] == [job("a")]


def test_pause_and_resume_rewrite_only_that_job(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    assert editor.set_enabled("b", False).action == "paused"
    assert not editor.set_enabled("b", False).changed
    text = editor.path.read_text()
    assert '{"id": "a", "every": "1h", "integrationIDs": [["x"]]},' in text
    assert json.loads(text)["jobs"][1]["enabled"] is False
    editor.set_enabled("b", True)
    assert editor.path.read_text() == HAND_WRITTEN  # the pair leaves no trace


@pytest.mark.parametrize(
    "job_text",
    [
        '{"id": "b", "every": "1h", "integrationIDs": [["x"]]}',
        '{\n      "id": "b",\n      "every": "1h",\n      "integrationIDs": [["x"]]\n    }',
        '{"id":"b","every":"1h","integrationIDs":[["x"]]}',
        '{"enabled": false, "id": "b", "every": "1h", "integrationIDs": [["x"]]}',
        '{"id" : "b" , "every": "1h" , "integrationIDs": [["x"]] }',
        '{"id": "b", "enabled": false , "every": "1h", "integrationIDs": [["x"]]}',
    ],
)
def test_pause_then_resume_gives_back_the_bytes(tmp_path: Path, job_text: str) -> None:
    text = '{"jobs": [\n    ' + job_text + "\n  ]\n}\n"
    editor = editor_on(tmp_path, text)
    paused = '"enabled"' in job_text
    if not paused:
        editor.set_enabled("b", False)
        assert json.loads(editor.path.read_text())["jobs"][0]["enabled"] is False
        assert editor.path.read_text().count("\n") == text.count("\n") + ("\n" in job_text)
    editor.set_enabled("b", True)
    resumed = editor.path.read_text()
    assert "enabled" not in resumed
    if not paused:
        assert resumed == text


def test_update_keeps_the_id_and_refuses_a_rename(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    editor.update_job("a", {"label": "A", "cron": "*/5 * * * *", "integrationIDs": [["x"]]})
    assert json.loads(editor.path.read_text())["jobs"][0] == {
        "id": "a",
        "label": "A",
        "cron": "*/5 * * * *",
        "integrationIDs": [["x"]],
    }
    with pytest.raises(ConfigError, match=r"jobs\[0\].id: \"z\" is not valid; expected 'a'"):
        editor.update_job("a", job("z"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[\n\t{"id": "a", "every": "1h", "integrationIDs": [["x"]]}\n]\n', '\t{\n\t\t"id": "c"'),
        ('{"settings": {}}', '"jobs": [\n    {\n      "id": "c"'),
        ('{"jobs": []}', '{"jobs": [\n  {\n    "id": "c"'),
    ],
    ids=["bare-list-tabs", "no-jobs-key", "empty-list"],
)
def test_other_shapes_of_file(tmp_path: Path, text: str, expected: str) -> None:
    editor = editor_on(tmp_path, text)
    editor.create_job(job("c"))
    written = editor.path.read_text()
    assert expected in written
    jobs = json.loads(written)
    assert (jobs if isinstance(jobs, list) else jobs["jobs"])[-1] == job("c")


def test_refusals_leave_the_file_untouched(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    with pytest.raises(JobExistsError, match="a job with id 'a' already exists"):
        editor.create_job(job("a"))
    with pytest.raises(JobNotFoundError, match="no job 'q'; jobs: a, b"):
        editor.delete_job("q")
    with pytest.raises(ConfigError, match=r'config.json:\d+:\d+: jobs\[2\].every: "soon"'):
        editor.create_job(job("c", every="soon"))
    with pytest.raises(JobExistsError, match="id 'b' already exists"):
        editor.create_job({"label": "B", "every": "1h", "integrationIDs": [["x"]]})
    assert editor.path.read_text() == HAND_WRITTEN


def test_an_invalid_file_is_not_edited(tmp_path: Path) -> None:
    editor = editor_on(tmp_path, '{"jobs": [{"id": "a", "every": "never"}]}')
    with pytest.raises(ConfigConflictError, match="is invalid as it stands") as caught:
        editor.create_job(job("c"))
    assert {p.path for p in caught.value.problems} == {"jobs[0].every", "jobs[0].integrationIDs"}


def test_a_change_underneath_is_detected(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    snapshot = editor.read()
    editor.path.write_text(HAND_WRITTEN.replace('"UTC"', '"Europe/Paris"'))
    with pytest.raises(ConfigChangedError, match=r"config\.json changed while it was being edited"):
        editor.write(snapshot, "{}")
    assert '"Europe/Paris"' in editor.path.read_text()


def test_an_edit_is_reapplied_over_a_change_underneath(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    calls = 0

    def decide(jobs: list[Any], ids: list[str]) -> tuple[str, Change | None]:
        nonlocal calls
        calls += 1
        if calls == 1:  # someone saves the file while this edit is being made
            editor.path.write_text(HAND_WRITTEN.replace('"UTC"', '"Europe/Paris"'))
        return "c", Change("insert", len(jobs), job("c"))

    editor.edit("created", decide)
    written = json.loads(editor.path.read_text())
    assert calls == 2
    assert written["settings"]["timezone"] == "Europe/Paris"
    assert [j["id"] for j in written["jobs"]] == ["a", "b", "c"]


def test_the_file_mode_is_kept_and_no_temp_file_is_left(tmp_path: Path) -> None:
    editor = editor_on(tmp_path)
    editor.path.chmod(0o640)
    editor.create_job(job("c"))
    assert stat.S_IMODE(editor.path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_file_with_a_byte_order_mark_is_read_and_edited_keeping_it(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a BOM; json.loads refuses one."""
    editor = editor_on(tmp_path, "\ufeff" + HAND_WRITTEN)
    editor.set_enabled("a", False)
    editor.set_enabled("a", True)
    assert editor.path.read_text(encoding="utf-8") == "\ufeff" + HAND_WRITTEN
    assert [job.id for job in load_config(editor.path).jobs] == ["a", "b"]
