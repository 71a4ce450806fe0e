"""The knowledge files: validated at start-up, and changed without touching Python."""

from __future__ import annotations

import shutil

import pytest
import yaml

from cds_service import create_app
from cds_service.config import Settings
from cds_service.errors import KnowledgeError
from cds_service.knowledge import DEFAULT_DIR, load_knowledge

from .conftest import NOW, load_request


@pytest.fixture
def cards(tmp_path):
    target = tmp_path / "cards"
    shutil.copytree(DEFAULT_DIR, target)
    return target


def edit(directory, name: str, change) -> None:
    path = directory / name
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("name, change, message", [
    ("labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=200),
     "critical_below is above lower_limit"),
    ("labs.yaml", lambda d: d["analytes"]["platelets"].update(source=["nowhere"]),
     "unknown source 'nowhere'"),
    ("drugs.yaml", lambda d: d["drugs"]["febuxostat"]["products"].update({"197388": 50}),
     "already belongs to azathioprine"),
    ("rules.yaml", lambda d: d["findings"]["pgx-poor"].update(indicator="hard-stop"),
     "indicator must be one of"),
    ("rules.yaml", lambda d: d["findings"]["pgx-poor"]["suggestions"].append(
        {"kind": "order-test", "test": "nope", "label": "x"}), "'nope' is missing"),
    ("services.yaml", lambda d: d["prefetch"].update(bloodCounts="Observation?code={codes:x}"),
     "unknown value set x"),
    ("labs.yaml", lambda d: d["monitoring"]["schedule"][-1].update(until_day=400),
     "the last step must be open-ended"),
])
def test_broken_knowledge_stops_the_start(cards, name, change, message):
    edit(cards, name, change)
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(cards)


def test_an_informaticist_changes_a_threshold_without_python(cards, tmp_path):
    body = load_request("cytopenia-platelets-50-warning")
    url = "/cds-services/thiopurine-order-select"

    def indicators(directory) -> list[str]:
        app = create_app(Settings(db_path=str(tmp_path / "s.sqlite3"), knowledge_dir=directory),
                         clock=lambda: NOW)
        return [c["indicator"] for c in app.test_client().post(url, json=body).get_json()["cards"]]

    assert indicators(cards) == ["warning"]
    edit(cards, "labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=60))
    assert indicators(cards) == ["critical"]

