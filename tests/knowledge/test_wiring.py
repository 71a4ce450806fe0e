"""A knowledge folder that is mis-wired stops the start with one message naming file, key and
problem; a valid edit (a threshold) changes the cards without Python."""

from __future__ import annotations

import shutil

import pytest
import yaml

from cds_service.cli import main
from cds_service.errors import KnowledgeError
from cds_service.facts import keys_of
from cds_service.knowledge import DEFAULT_DIR, load_knowledge

from ..test_cases import evaluate


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


def _finding(data: dict, key: str) -> dict:
    return data["findings"][key]


BROKEN = [
    # the four mis-wirings
    ("services.yaml", lambda d: d["services"][0]["rules"].append("cytopaenia"),
     "services.yaml: services.thiopurine-order-select: rules: unknown rule 'cytopaenia'"),
    ("drugs.yaml", lambda d: d["drugs"]["ribavirin"]["interaction"].update(
        finding="drug-interaction-warn"),
     "rules.yaml: findings: 'drug-interaction-warn' (emitted by rule 'interactions') is not"),
    ("rules.yaml", lambda d: _finding(d, "pgx-poor").update(summary="{drug}: {gnee} poor"),
     "rules.yaml: findings.pgx-poor.summary: placeholder(s) ['gnee']"),
    ("labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=-5),
     "labs.yaml: analytes.platelets.critical_below: Input should be greater than or equal to 0"),
    # more of the same kind
    ("labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=200),
     "labs.yaml: analytes.platelets: Value error, critical_below must be below lower_limit"),
    ("labs.yaml", lambda d: d["analytes"]["platelets"].update(source=["nowhere"]),
     "labs.yaml.analytes.platelets: source: unknown source 'nowhere'"),
    ("labs.yaml", lambda d: d["analytes"]["platelets"].update(lower_limt=150),
     "labs.yaml: analytes.platelets.lower_limt: Extra inputs are not permitted"),
    ("labs.yaml", lambda d: d["monitoring"]["schedule"][-1].update(until_day=400),
     "labs.yaml: monitoring: Value error, schedule: only the last step is open-ended"),
    ("drugs.yaml", lambda d: d["drugs"]["febuxostat"]["products"].update({"197388": 50}),
     "drugs.yaml: drugs.febuxostat: code 197388 already belongs to azathioprine"),
    ("rules.yaml", lambda d: _finding(d, "pgx-poor").update(indicator="hard-stop"),
     "rules.yaml: findings.pgx-poor.indicator: Input should be 'info', 'warning' or 'critical'"),
    ("rules.yaml", lambda d: _finding(d, "pgx-poor")["suggestions"].append(
        {"kind": "order-test", "test": "nope", "label": "x"}),
     "rules.yaml: findings.pgx-poor: suggestions[1].test 'nope' is not in tests"),
    ("rules.yaml", lambda d: d["findings"].update(extra=dict(_finding(d, "pgx-poor"))),
     "rules.yaml: findings ['extra']: no rule emits them"),
    ("rules.yaml", lambda d: d["evidence"].update(count="{analyte} {valeu:g}"),
     "rules.yaml: evidence.count: placeholder(s) ['valeu']"),
    ("rules.yaml", lambda d: _finding(d, "pgx-poor").update(family="pgx"),
     "rules.yaml: findings.pgx-poor: family 'pgx' is not in families"),
    ("rules.yaml", lambda d: _finding(d, "pgx-poor").update(links=["cpic-2019"]),
     "rules.yaml: findings.pgx-poor: links: 'cpic-2019' is not defined"),
    ("services.yaml", lambda d: d["prefetch"].update(bloodCounts="Observation?code={codes:x}"),
     "services.yaml: unknown value set x"),
    ("services.yaml", lambda d: d["fallbacks"].update(medicatons="MedicationOrder?patient=1"),
     "services.yaml: fallbacks: 'medicatons' is not a prefetch key"),
    ("services.yaml", lambda d: d["services"][3]["prefetch"].remove("bloodCounts"),
     "rule 'cytopenia' reads counts, which needs prefetch key(s) ['bloodCounts']"),
    ("pgx.yaml", lambda d: d["ladder"][0].update(finding="pgx-pooor"),
     "rules.yaml: findings: 'pgx-pooor' (emitted by rule 'pgx') is not defined"),
    ("pgx.yaml", lambda d: d["ladder"][3]["when"].update(genes=["TMPT"]),
     "pgx.yaml: ladder.3: unknown gene(s) ['TMPT']"),
    ("pgx.yaml", lambda d: d["genes"]["TPMT"]["codes"]["phenotype"][0].update(code="79713-8"),
     "pgx.yaml: genes.TPMT.codes.phenotype: LOINC 79713-8 fails its check digit"),
    ("conditions.yaml", lambda d: d["conditions"].pop("itp"),
     "conditions.yaml: conditions.itp is missing"),
]


@pytest.mark.parametrize("name, change, message", BROKEN, ids=[b[2][:60] for b in BROKEN])
def test_a_mis_wired_knowledge_folder_stops_the_start(cards, name, change, message):
    edit(cards, name, change)
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(cards)
    assert message in str(error.value)


def test_knowledge_check_names_the_problem_for_informaticists(cards, capsys):
    assert main(["knowledge", "check", str(cards)]) == 0
    edit(cards, "labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=-5))
    assert main(["knowledge", "check", str(cards)]) == 1
    assert "labs.yaml: analytes.platelets.critical_below" in capsys.readouterr().err


def test_an_edit_without_a_version_bump_still_changes_the_version(cards):
    before = load_knowledge(cards).version
    edit(cards, "labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=60))
    after = load_knowledge(cards).version
    assert before.split("+")[0] == after.split("+")[0] and before != after


def test_an_informaticist_changes_a_threshold_without_python(tmp_path, capsys):
    """The documented path: export, edit, check, point CDS_KNOWLEDGE_DIR at it."""
    target = tmp_path / "my-cards"
    assert main(["knowledge", "export", str(target)]) == 0
    edit(target, "labs.yaml", lambda d: d["analytes"]["platelets"].update(critical_below=60))
    assert main(["knowledge", "check", str(target)]) == 0
    case = {"given": {"counts": {"platelets": 55}}}
    shipped, edited = load_knowledge(), load_knowledge(target)
    assert [f.key for f in evaluate(case, shipped)[0]] == ["cytopenia-low"]
    assert [f.key for f in evaluate(case, edited)[0]] == ["cytopenia-critical"]


def test_a_fact_reads_the_keys_of_the_facts_it_depends_on():
    medicines = {"medications", "medicationStatements"}  # the orders fact's keys
    assert keys_of("pregnancy") == {"pregnancyStatus", "conditions", *medicines}
    assert keys_of("courses") == {"thiopurineHistory", *medicines}
