"""`check` and `report` as a person at a terminal uses them: exit status by what was found, one
clear line (no traceback) for input that cannot be used, text without Markdown markers."""

from __future__ import annotations

import json

import pytest

from cds_service import cli

from .conftest import BOTH_NORMAL, PLATELETS_149, TPMT_POOR, hook_call

CRITICAL, WARNING, QUIET = "critical.json", "warning.json", "quiet.json"


@pytest.fixture(autouse=True)
def requests_on_disk(tmp_path, monkeypatch, knowledge):
    """The three requests as saved files (check reads a file), in the working folder."""
    for name, given in ((CRITICAL, TPMT_POOR), (WARNING, PLATELETS_149), (QUIET, BOTH_NORMAL)):
        (tmp_path / name).write_text(json.dumps(hook_call(knowledge, given)[1]))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    ("", "is empty"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "does not hold a CDS Hooks request"),
    ("folder", "is a folder"),
])
def test_unusable_input_is_one_line_and_exit_2(tmp_path, capsys, content, problem):
    path = tmp_path / "request.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert cli.main(["check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1
    assert err.startswith("azathioprine-cds check: ") and problem in err


@pytest.mark.parametrize("request_file, fail_on, status", [
    (CRITICAL, None, 0),
    (CRITICAL, "critical", 1),
    (CRITICAL, "warning", 1),
    (WARNING, "critical", 0),
    (WARNING, "warning", 1),
    (QUIET, "warning", 0),
])
def test_the_exit_status_says_what_was_found(capsys, request_file, fail_on, status):
    arguments = ["check", request_file] + (["--fail-on", fail_on] if fail_on else [])
    assert cli.main(arguments) == status


def test_a_refused_request_exits_2(tmp_path, capsys):
    path = tmp_path / "request.json"
    path.write_text('{"hook": "order-select"}')
    assert cli.main(["check", str(path), "--fail-on", "critical"]) == 2
    assert capsys.readouterr().out.startswith("HTTP 400: ")


def test_the_text_has_no_markdown_markers(capsys):
    cli.main(["check", CRITICAL])
    out = capsys.readouterr().out
    assert "[CRITICAL]" in out and "Evidence" in out and "Strength: Strong (CPIC)" in out
    for marker in ("**", "__", "](", "*Strength"):
        assert marker not in out


def test_plain_text_from_markdown():
    assert cli.plain("**Evidence**\n\n- a *b* `c` [CPIC](https://x.example/y)") == (
        "Evidence\n\n- a b c CPIC <https://x.example/y>")
    assert cli.plain("2 * 3 * 4") == "2 * 3 * 4"


def test_the_report_refuses_an_output_folder_that_does_not_exist(app, tmp_path, capsys):
    db = app.config["SETTINGS"].db_path
    target = tmp_path / "no-such-folder" / "report.html"
    assert cli.main(["report", "--db", db, "--html", str(target)]) == 2
    out, err = capsys.readouterr()
    assert not out and "no-such-folder" in err and "does not exist" in err
    assert not target.parent.exists()


def test_the_report_refuses_a_postgresql_database_without_a_store(postgres_url, tmp_path,
                                                                   capsys):
    assert cli.main(["report", "--db", postgres_url]) == 2
    assert "no store at postgresql://" in capsys.readouterr().err
