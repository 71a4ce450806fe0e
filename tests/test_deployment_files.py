"""The Dockerfile, compose.yaml and the README tell the same story (no Docker engine runs here,
so the files are read, not built): the README's install and serve commands, the variables of the
configuration table, the readiness probe."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import yaml

from cds_service.config import Settings, variable

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
QUICK_START = re.search(r"## Quick start\n\n```sh\n(.+?)\n```", README).group(1)
INSTALL, _, SERVE = QUICK_START.rpartition(" && ")


def dockerfile(instruction: str) -> list[str]:
    """The arguments of each line of one instruction (continuation lines joined)."""
    text = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines()
            if line.split(None, 1)[:1] == [instruction]]


def table_variables() -> set[str]:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {name for line in table.splitlines() if line.startswith("| `CDS_")
            for name in re.findall(r"`(CDS_[A-Z0-9_]+)`", line.split("|")[1])}


def test_the_readme_quick_start_is_what_the_image_runs():
    assert INSTALL == "python3 -m venv .venv && .venv/bin/pip install -q ."
    assert SERVE == ".venv/bin/azathioprine-cds serve"
    assert any(run.startswith(INSTALL + " ") for run in dockerfile("RUN"))
    command = json.loads(dockerfile("CMD")[0])
    assert " ".join(command[:2]) == SERVE
    assert command[2:] == ["--host", "0.0.0.0", "--port", "8080"]  # all interfaces, in there
    assert "http://127.0.0.1:8080" in README and dockerfile("EXPOSE") == ["8080"]


def test_the_image_is_slim_and_runs_as_a_user():
    assert re.fullmatch(r"python:3\.\d+-slim", dockerfile("FROM")[0])
    assert dockerfile("USER") and dockerfile("USER")[-1] not in ("root", "0")


def test_the_configuration_table_is_the_settings():
    assert table_variables() == {variable(f.name) for f in fields(Settings)}


def test_every_variable_the_files_set_is_documented():
    service = COMPOSE["services"]["cds"]
    used = set(service["environment"]) | set(re.findall(r"\b(CDS_[A-Z0-9_]+)=", DOCKERFILE))
    documented = table_variables()
    assert used - {"CDS_DB_PASSWORD"} <= documented  # the database's own password: compose's
    assert "CDS_DB_PASSWORD" in README  # and the README says how it is passed


def test_compose_runs_replicas_on_postgresql_with_a_shared_key():
    services = COMPOSE["services"]
    assert services["db"]["image"].startswith("postgres:")
    cds = services["cds"]
    assert cds["environment"]["CDS_DATABASE_URL"].startswith("postgresql://")
    assert "CDS_PSEUDONYM_KEY" in cds["environment"]
    assert cds["deploy"]["replicas"] >= 2 and cds["build"] == "."


def test_the_health_checks_use_the_readiness_probe(app):
    probes = [" ".join(COMPOSE["services"]["cds"]["healthcheck"]["test"]),
              dockerfile("HEALTHCHECK")[0]]
    for probe in probes:
        path = re.search(r"http://127\.0\.0\.1:8080(/\w+)", probe).group(1)
        assert path == "/readyz"
        assert app.test_client().get(path).status_code == 200
