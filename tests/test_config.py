"""Settings from the environment: every problem found at once, one line each, secrets never
echoed; booleans strict."""

from __future__ import annotations

import pytest

from cds_service.config import ConfigError, Settings


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return info.value.problems


@pytest.mark.parametrize("word, value", [("1", True), ("TRUE", True), ("on", True),
                                         ("0", False), ("No", False), ("off", False)])
def test_booleans_take_the_usual_words(word, value):
    assert Settings.from_env({"CDS_STRICT_412": word}).strict_412 is value


@pytest.mark.parametrize("word", ["ture", "", "2", "enabled"])
def test_any_other_boolean_is_refused(word):
    assert problems({"CDS_SUPPRESS_REPEATS": word})[0].startswith("CDS_SUPPRESS_REPEATS: must be")


def test_every_problem_is_listed_once(tmp_path):
    found = problems({
        "CDS_AUTH_MODE": "bogus", "CDS_LOG_LEVEL": "loud", "CDS_MAX_PAGES": "-1",
        "CDS_PUBLIC_BASE_URL": "cds.example.org", "CDS_FHIR_ALLOWLIST": "ftp://x",
        "CDS_DB_PATH": "a.sqlite3", "CDS_DATABASE_URL": "mysql://db/x",
        "CDS_PSEUDONYM_KEY_FILE": str(tmp_path / "missing")})
    assert [p.split(":")[0] for p in found] == [
        "CDS_MAX_PAGES", "CDS_AUTH_MODE", "CDS_LOG_LEVEL", "CDS_PUBLIC_BASE_URL",
        "CDS_FHIR_ALLOWLIST", "CDS_DATABASE_URL", "CDS_DB_PATH and CDS_DATABASE_URL are both set",
        "CDS_PSEUDONYM_KEY_FILE"]


def test_the_pseudonym_key_is_checked_and_never_echoed(tmp_path):
    short = "too-short-a-secret"
    assert problems({"CDS_PSEUDONYM_KEY": short}) == [
        "CDS_PSEUDONYM_KEY: must be at least 32 characters"]
    key_file = tmp_path / "key"
    key_file.write_text("k" * 40 + "\n")
    settings = Settings.from_env({"CDS_PSEUDONYM_KEY_FILE": str(key_file),
                                  "CDS_DATABASE_URL": "postgresql://u:pw-secret@db/cds"})
    assert "pw-secret" not in repr(settings)
    assert problems({"CDS_DATABASE_URL": "postgresql://db/cds"}) == [
        "CDS_PSEUDONYM_KEY or CDS_PSEUDONYM_KEY_FILE is required with PostgreSQL: every"
        " instance must use the same key"]


def test_a_repeat_window_of_zero_is_allowed_but_not_a_budget_of_zero():
    assert Settings.from_env({"CDS_REPEAT_WINDOW_MINUTES": "0"}).repeat_window_minutes == 0
    assert problems({"CDS_TIME_BUDGET_MS": "0"}) == ["CDS_TIME_BUDGET_MS: must be at least 1,"
                                                     " not '0'"]
