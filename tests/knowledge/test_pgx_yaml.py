"""cards/pgx.yaml at start-up: what the PGx reader relies on is checked when the knowledge loads,
and a broken file stops the start with one message naming file, key and problem (the ladder and
check-digit mis-wirings are in test_wiring.py)."""

from __future__ import annotations

import shutil

import pytest

from cds_service.errors import KnowledgeError
from cds_service.knowledge import DEFAULT_DIR, load_knowledge
from cds_service.knowledge.schema import PHENOTYPES

from .test_wiring import edit


def test_the_shipped_tables_cover_every_phenotype_and_query_every_code(knowledge):
    pgx = knowledge.pgx
    assert set(pgx.spec.phenotypes.labels) == set(PHENOTYPES)
    assert set(pgx.pairs.values()) <= set(PHENOTYPES) and set(pgx.answers.values()) <= set(
        PHENOTYPES)
    query = knowledge.prefetch["pgxResults"]
    assert all(code in query.split("code=")[1].split(",") for code in pgx.codes)
    assert {"TPMT", "NUDT15"} == set(pgx.genes) == set(pgx.hgnc.values())


def _functions(d: dict, gene: str) -> dict:
    return d["genes"][gene]["alleles"]["functions"]


BROKEN = [
    (lambda d: d.pop("pair_rules"), "pgx.yaml: pair_rules: Field required"),
    (lambda d: d.pop("genes"), "pgx.yaml: genes: Field required"),
    (lambda d: _functions(d, "NUDT15").update({"*4": "decreased"}),
     "pgx.yaml: genes.NUDT15.alleles: *4 has function 'decreased', which no pair rule covers"),
    (lambda d: d["pair_rules"]["rules"].pop(),
     "pgx.yaml: pair_rules: Value error, no phenotype for the function pairs [('unknown',"
     " 'unknown')]"),
    (lambda d: d["pair_rules"]["rules"].append(dict(d["pair_rules"]["rules"][0])),
     "pgx.yaml: pair_rules: Value error, a function pair is listed twice"),
    (lambda d: d["genes"]["TPMT"]["codes"]["phenotype"][0].update(source="nowhere"),
     "pgx.yaml.genes.TPMT.codes.phenotype[0]: source: unknown source 'nowhere'"),
    (lambda d: d["answers"][0].pop("source"), "pgx.yaml: answers.0.source: Field required"),
    (lambda d: d["answers"][0].update(phenotype="slow"),
     "pgx.yaml: answers.0.phenotype: Input should be 'normal', 'intermediate'"),
    (lambda d: d["phenotype_text"]["terms"].update({"slow metabolizer": "slow"}),
     "pgx.yaml: phenotype_text.terms.slow metabolizer: Input should be 'normal'"),
    (lambda d: d["activity"]["range_text"].update(deficient="pooor"),
     "pgx.yaml: activity.range_text.deficient: Input should be 'normal'"),
    (lambda d: d["phenotypes"]["labels"].pop("indeterminate"),
     "pgx.yaml: phenotypes: Value error, labels must name exactly"),
    (lambda d: d["genes"]["NUDT15"].update(hgnc=d["genes"]["TPMT"]["hgnc"]),
     "pgx.yaml: genes.NUDT15.hgnc HGNC:12014 is repeated"),
    (lambda d: d["genes"]["NUDT15"].update(hgnc="23063"),
     "pgx.yaml: genes.NUDT15.hgnc: String should match pattern"),
    (lambda d: _functions(d, "TPMT").update({"3A": "no"}),
     "pgx.yaml: genes.TPMT.alleles.functions.3A.[key]: String should match pattern"),
    (lambda d: d["generic_codes"]["genotype"].append(
        dict(d["genes"]["TPMT"]["codes"]["phenotype"][0])),
     "pgx.yaml: generic_codes.genotype: code 79713-4 is listed with another meaning"),
    (lambda d: d["components"]["gene_studied"].update(code="48018-5"),
     "pgx.yaml: components.gene_studied: LOINC 48018-5 fails its check digit"),
    # YAML reads an unquoted no as false: the function must be quoted ("no")
    (lambda d: _functions(d, "TPMT").update({"*2": False}),
     "pgx.yaml: genes.TPMT.alleles.functions.*2: Input should be a valid string"),
    (lambda d: d["activity"]["interpretation_codes"].update({False: "normal"}),
     "pgx.yaml: activity.interpretation_codes."),
    (lambda d: d["genes"]["TPMT"]["alleles"].update(function={}),
     "pgx.yaml: genes.TPMT.alleles.function: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("change, message", BROKEN, ids=[b[1][9:60] for b in BROKEN])
def test_a_broken_pgx_yaml_stops_the_start(tmp_path, change, message):
    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_DIR, cards)
    edit(cards, "pgx.yaml", change)
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(cards)
    assert message in str(error.value)
