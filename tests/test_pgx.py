"""cds_service.pgx against cards/pgx.yaml: every result form of clinical-knowledge.md 2-4."""

from __future__ import annotations

import copy
from collections import Counter
from itertools import combinations_with_replacement
from pathlib import Path

import pytest
import yaml

from cds_service.errors import KnowledgeError
from cds_service.pgx import PHENOTYPES, PgxKnowledge

PGX_YAML = Path(__file__).resolve().parent.parent / "cards" / "pgx.yaml"
LOINC = "http://loinc.org"
HGNC = "http://www.genenames.org"
TBD = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
TPMT_ID, NUDT15_ID = "HGNC:12014", "HGNC:23063"


@pytest.fixture(scope="module")
def data() -> dict:
    return yaml.safe_load(PGX_YAML.read_text())


@pytest.fixture(scope="module")
def pgx(data: dict) -> PgxKnowledge:
    return PgxKnowledge.from_data(copy.deepcopy(data))


def obs(code: str, oid: str = "o1", date: str | None = "2024-03-01", system: str = LOINC,
        **fields) -> dict:
    resource = {"resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": system, "code": code}]}, **fields}
    if date:
        resource["effectiveDateTime"] = date
    return resource


def la(code: str, display: str = "") -> dict:
    return {"coding": [{"system": LOINC, "code": code, "display": display}]}


def gene(hgnc_id: str, system: str = HGNC) -> dict:
    return {"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
            "valueCodeableConcept": {"coding": [{"system": system, "code": hgnc_id}]}}


def drug(name: str) -> dict:
    return {"code": {"coding": [{"system": LOINC, "code": "51963-7"}]},
            "valueCodeableConcept": {"text": name}}


def implication(value: dict) -> dict:
    return {"code": {"coding": [{"system": TBD, "code": "therapeutic-implication"}]},
            "valueCodeableConcept": value}


def one(pgx: PgxKnowledge, *observations: dict) -> tuple[dict, list[str]]:
    return pgx.interpret(list(observations))


# ---- phenotype form ----------------------------------------------------------------------

def test_la_code_on_tpmt_phenotype_code(pgx):
    results, problems = one(pgx, obs("79713-4", "p1", valueCodeableConcept=la("LA9657-3",
                                                                             "Poor metabolizer")))
    assert problems == []
    r = results["TPMT"]
    assert (r.gene, r.phenotype, r.form) == ("TPMT", "poor", "phenotype")
    assert r.resource == "Observation/p1" and r.effective == "2024-03-01"
    assert "Poor Metabolizer" in r.evidence and "Observation/p1" in r.evidence
    assert "NUDT15" not in results


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("valueString", "TPMT Intermediate Metabolizer", "intermediate"),
    ("valueString", "intermediate metabolizer", "intermediate"),
    ("valueString", "TPMT: Normal Metabolizer.", "normal"),
    ("valueCodeableConcept", {"text": "Possible Intermediate Metabolizer"},
     "possible_intermediate"),
    ("valueCodeableConcept", {"text": "tpmt possible intermediate metabolizer"},
     "possible_intermediate"),
    ("valueCodeableConcept", {"coding": [{"display": "TPMT Indeterminate"}]}, "indeterminate"),
    ("valueString", "Indeterminate", "indeterminate"),
    ("valueCodeableConcept", {"text": "POOR METABOLIZER"}, "poor"),
])
def test_phenotype_text(pgx, field, value, expected):
    results, problems = one(pgx, obs("79713-4", **{field: value}))
    assert problems == []
    assert results["TPMT"].phenotype == expected


@pytest.mark.parametrize("value", [
    {"valueCodeableConcept": la("LA10315-2", "Ultrarapid metabolizer")},  # not a TPMT phenotype
    {"valueCodeableConcept": la("LA25390-8", "Rapid metabolizer")},
    {"valueString": "heterozygous"},              # lab wording that does not say the phenotype
    {"valueString": "NUDT15 Poor Metabolizer"},   # the wrong gene on a TPMT code
    {},                                           # no value at all
])
def test_phenotype_that_cannot_be_read_is_a_problem(pgx, value):
    results, problems = one(pgx, obs("79713-4", "bad", **value))
    assert results == {}
    assert len(problems) == 1 and problems[0].startswith("Observation/bad")


def test_legacy_53040_2_gene_from_component(pgx):
    legacy = obs("53040-2", valueCodeableConcept=la("LA10317-8", "Intermediate metabolizer"),
                 component=[gene(TPMT_ID, "http://www.genenames.org/geneId"), drug("azathioprine")])
    results, problems = one(pgx, legacy)
    assert problems == []
    assert results["TPMT"].phenotype == "intermediate"
    assert "azathioprine" in results["TPMT"].evidence


def test_legacy_53040_2_also_coded_79713_4_takes_gene_from_code(pgx):
    legacy = obs("53040-2", valueCodeableConcept=la("LA25391-6"))
    legacy["code"]["coding"].append({"system": LOINC, "code": "79713-4"})
    results, problems = one(pgx, legacy)
    assert problems == [] and results["TPMT"].phenotype == "normal"


def test_therapeutic_implication_gene_from_component(pgx):
    ti = obs("therapeutic-implication", system=TBD, component=[
        gene(NUDT15_ID), drug("azathioprine"), implication(la("LA9657-3", "Poor metabolizer"))])
    results, problems = one(pgx, ti)
    assert problems == []
    assert set(results) == {"NUDT15"}
    assert results["NUDT15"].phenotype == "poor"
    assert results["NUDT15"].form == "phenotype"


def test_therapeutic_implication_gene_from_derived_genotype(pgx):
    genotype = obs("84413-4", "g1", valueString="*1/*1", component=[gene(TPMT_ID)])
    ti = obs("therapeutic-implication", "t1", date="2024-05-01", system=TBD,
             derivedFrom=[{"reference": "Observation/g1"}],
             component=[implication(la("LA10317-8"))])
    results, problems = one(pgx, genotype, ti)
    assert problems == []
    # the implication (later) wins over the genotype it was derived from
    assert results["TPMT"].phenotype == "intermediate"
    assert results["TPMT"].resource == "Observation/t1"


def test_therapeutic_implication_gene_from_text(pgx):
    ti = obs("therapeutic-implication", system=TBD,
             component=[implication({"text": "NUDT15 Intermediate Metabolizer"})])
    results, problems = one(pgx, ti)
    assert problems == [] and results["NUDT15"].phenotype == "intermediate"


def test_generic_result_without_any_gene_is_ignored_quietly(pgx):
    # e.g. a CYP2C19 implication with no gene component: not ours, not a problem either
    ti = obs("therapeutic-implication", system=TBD, component=[implication(la("LA9657-3"))])
    genotype = obs("84413-4", "g2", valueString="*1/*2")
    assert one(pgx, ti, genotype) == ({}, [])


def test_conflicting_genes_are_a_problem(pgx):
    tpmt_code_nudt15_component = obs("79713-4", valueString="Poor Metabolizer",
                                     component=[gene(NUDT15_ID)])
    results, problems = one(pgx, tpmt_code_nudt15_component)
    assert results == {} and len(problems) == 1


# ---- diplotype form ----------------------------------------------------------------------

@pytest.mark.parametrize(("code", "symbol", "diplotype", "expected"), [
    ("80738-8", "TPMT", "*1/*1", "normal"),
    ("36922-3", "TPMT", "*1/*3A", "intermediate"),
    ("41048-0", "TPMT", "*3A/*3C", "poor"),
    ("80738-8", "TPMT", "*3a/*3c", "poor"),                    # case of the suballele letter
    ("80738-8", "TPMT", "*3A/*5", "possible_intermediate"),    # no + uncertain
    ("80738-8", "TPMT", "*30/*2", "possible_intermediate"),    # unknown + no
    ("80738-8", "TPMT", "*1/*5", "indeterminate"),             # normal + uncertain
    ("80738-8", "TPMT", "*30/*35", "indeterminate"),           # unknown + unknown
    ("80738-8", "TPMT", "*1/*42", "indeterminate"),            # allele not in the table
    ("84413-4", "NUDT15", "*1/*3", "intermediate"),
    ("84413-4", "NUDT15", "*3/*9", "poor"),                    # *9 no function since 2019
    ("84413-4", "NUDT15", "*1/*4", "indeterminate"),
    ("84413-4", "NUDT15", "*2/*6", "possible_intermediate"),
    ("84413-4", "NUDT15", "*1/*15", "indeterminate"),          # not in the table
])
def test_diplotype(pgx, code, symbol, diplotype, expected):
    hgnc_id = TPMT_ID if symbol == "TPMT" else NUDT15_ID
    observation = obs(code, valueCodeableConcept={"text": f"{symbol} {diplotype}"},
                      component=[gene(hgnc_id)])
    results, problems = one(pgx, observation)
    assert problems == []
    assert results[symbol].phenotype == expected
    assert results[symbol].form == "diplotype"


def test_diplotype_evidence_line(pgx):
    genotype = obs("84413-4", "abc", valueCodeableConcept={
        "coding": [{"system": "http://www.pharmvar.org", "display": "TPMT *1/*3A"}]})
    results, _ = one(pgx, genotype)
    assert results["TPMT"].evidence == (
        "TPMT *1/*3A (diplotype) -> Intermediate Metabolizer, Observation/abc, 2024-03-01")


@pytest.mark.parametrize("value", ["*1/", "1/3A", "*1/*3A or *3B/*3C", "TPMT", "*1-*3A"])
def test_malformed_diplotype_is_a_problem(pgx, value):
    results, problems = one(pgx, obs("80738-8", "m1", valueString=value))
    assert results == {}
    assert len(problems) == 1 and "Observation/m1" in problems[0]


def test_combined_panel_reads_both_genes(pgx):
    panel = obs("93193-1", valueString="TPMT *1/*1; NUDT15 *1/*3")
    results, problems = one(pgx, panel)
    assert problems == []
    assert results["TPMT"].phenotype == "normal"
    assert results["NUDT15"].phenotype == "intermediate"


def test_combined_panel_without_a_gene_is_a_problem(pgx):
    results, problems = one(pgx, obs("93193-1", valueString="*1/*3"))
    assert results == {} and len(problems) == 1


def test_every_allele_pair_matches_the_cpic_counts(pgx, data):
    """clinical-knowledge.md 2.1 lists how many diplotypes give each phenotype (PharmCAT)."""
    expected = {
        "TPMT": {"normal": 1, "intermediate": 11, "possible_intermediate": 341, "poor": 66,
                 "indeterminate": 31 + 496},
        "NUDT15": {"normal": 1, "intermediate": 3, "possible_intermediate": 15, "poor": 6,
                   "indeterminate": 5 + 15},
    }
    for symbol, counts in expected.items():
        alleles = list(data["genes"][symbol]["alleles"]["functions"])
        seen = Counter()
        for first, second in combinations_with_replacement(alleles, 2):
            results, problems = one(pgx, obs("84413-4", valueString=f"{symbol} {first}/{second}"))
            assert problems == []
            seen[results[symbol].phenotype] += 1
        assert seen == counts, symbol


# ---- activity form -----------------------------------------------------------------------

def activity(value: float | None = 12.0, interpretation: list | None = None,
             ranges: list | None = None, oid: str = "a1") -> dict:
    fields = {}
    if value is not None:
        fields["valueQuantity"] = {"value": value, "unit": "U/mL"}
    if interpretation is not None:
        fields["interpretation"] = interpretation
    if ranges is not None:
        fields["referenceRange"] = ranges
    return obs("21563-2", oid, **fields)


def flag(code: str) -> dict:
    return {"coding": [{"system": V3, "code": code}]}


def rng(low: float | None = None, high: float | None = None, text: str | None = None) -> dict:
    result = {}
    if low is not None:
        result["low"] = {"value": low, "unit": "U/mL"}
    if high is not None:
        result["high"] = {"value": high, "unit": "U/mL"}
    if text:
        result["text"] = text
    return result


@pytest.mark.parametrize(("interpretation", "expected"), [
    ([flag("LL")], "poor"),
    ([flag("L")], "intermediate"),
    ([flag("N")], "normal"),
    ([flag("H")], "normal"),                         # high activity is not deficiency
    ([{"text": "Deficient"}], "poor"),
    ([{"text": "Intermediate"}], "intermediate"),
    ([{"coding": [{"display": "Low"}]}], "intermediate"),
    ([flag("L"), {"text": "absent"}], "poor"),       # several flags: the most severe
])
def test_activity_by_interpretation(pgx, interpretation, expected):
    results, problems = one(pgx, activity(interpretation=interpretation))
    assert problems == []
    assert results["TPMT"].phenotype == expected
    assert results["TPMT"].form == "activity"


@pytest.mark.parametrize(("value", "ranges", "expected"), [
    (20.0, [rng(24.0, 44.0)], "intermediate"),             # below low
    (30.0, [rng(24.0, 44.0)], "normal"),                   # within
    (50.0, [rng(24.0, 44.0)], "normal"),                   # above: not deficiency
    (10.0, [rng(24.0, 44.0), rng(high=16.9, text="Deficient")], "poor"),
    (20.0, [rng(24.0, 44.0), rng(high=16.9, text="Deficient")], "intermediate"),
    (8.0, [rng(26, 50, text="normal")], "intermediate"),   # labelled normal range
])
def test_activity_by_reference_range(pgx, value, ranges, expected):
    results, problems = one(pgx, activity(value, ranges=ranges))
    assert problems == []
    assert results["TPMT"].phenotype == expected


def test_activity_at_the_low_bound_is_normal_and_evidence_shows_the_basis(pgx):
    results, _ = one(pgx, activity(24.0, ranges=[rng(24.0, 44.0)]))
    assert results["TPMT"].phenotype == "normal"
    results, _ = one(pgx, activity(20.0, ranges=[rng(24.0, 44.0)]))
    assert results["TPMT"].evidence == (
        "TPMT activity 20.0 U/mL, below the reference range 24.0-44.0 U/mL (activity) -> "
        "Intermediate Metabolizer, Observation/a1, 2024-03-01")


def test_activity_interpretation_beats_reference_range(pgx):
    results, _ = one(pgx, activity(20.0, [flag("LL")], [rng(24.0, 44.0)]))
    assert results["TPMT"].phenotype == "poor"


@pytest.mark.parametrize("observation", [
    activity(12.0),                                                      # neither
    activity(12.0, ranges=[{"low": {"value": 24, "unit": "nmol/h/g Hb"}}]),  # other units
    activity(12.0, [{"text": "see comment"}]),                           # words we don't know
    activity(None, ranges=[rng(24.0, 44.0)]),                            # range but no value
])
def test_activity_that_cannot_be_read_is_a_problem(pgx, observation):
    results, problems = one(pgx, observation)
    assert results == {}
    assert len(problems) == 1 and "Observation/a1" in problems[0]


def test_activity_never_applies_to_nudt15(pgx):
    mislabelled = obs("21563-2", valueQuantity={"value": 5}, interpretation=[flag("LL")],
                      component=[gene(NUDT15_ID)])
    results, problems = one(pgx, mislabelled)
    assert results == {} and len(problems) == 1


# ---- which result wins -------------------------------------------------------------------

def test_latest_result_wins(pgx):
    old = obs("79713-4", "old", "2020-01-01", valueCodeableConcept=la("LA9657-3"))
    new = obs("80738-8", "new", "2024-06-01", valueString="*1/*1")
    for order in ((old, new), (new, old)):
        results, _ = one(pgx, *order)
        assert results["TPMT"].resource == "Observation/new"
        assert results["TPMT"].phenotype == "normal"


def test_partial_dates_and_issued_rank_correctly(pgx):
    year_only = obs("79713-4", "y", "2024", valueString="Poor Metabolizer")
    issued = obs("79713-4", "i", None, valueString="Normal Metabolizer",
                 issued="2023-12-31T23:00:00-05:00")   # 2024-01-01T04:00Z: after "2024"
    results, _ = one(pgx, year_only, issued)
    assert results["TPMT"].resource == "Observation/i"
    assert results["TPMT"].effective == "2023-12-31T23:00:00-05:00"


def test_undated_ranks_last(pgx):
    undated = obs("79713-4", "u", None, valueString="Poor Metabolizer")
    dated = obs("79713-4", "d", "2010-01-01", valueString="Normal Metabolizer")
    results, _ = one(pgx, undated, dated)
    assert results["TPMT"].resource == "Observation/d"
    results, _ = one(pgx, undated)
    assert results["TPMT"].effective is None and "undated" in results["TPMT"].evidence


def test_same_date_tie_goes_to_the_more_severe(pgx):
    a = obs("79713-4", "a", valueString="Normal Metabolizer")
    b = obs("79713-4", "b", valueString="Poor Metabolizer")
    for order in ((a, b), (b, a)):
        assert one(pgx, *order)[0]["TPMT"].phenotype == "poor"


def test_uninterpretable_latest_falls_back_to_earlier(pgx):
    earlier = obs("80738-8", "e", "2020-01-01", valueString="*1/*3A")
    latest = obs("80738-8", "l", "2024-01-01", valueString="*1/*3A or *3B/*3C")
    results, problems = one(pgx, earlier, latest)
    assert results["TPMT"].resource == "Observation/e"
    assert results["TPMT"].phenotype == "intermediate"
    assert len(problems) == 1 and problems[0].startswith("Observation/l")


def test_missing_id_names_the_resource_type(pgx):
    anonymous = obs("79713-4", valueString="Poor Metabolizer")
    del anonymous["id"]
    results, _ = one(pgx, anonymous)
    assert results["TPMT"].resource == "Observation"


# ---- is_relevant -------------------------------------------------------------------------

@pytest.mark.parametrize(("observation", "expected"), [
    (obs("79713-4"), True),
    (obs("21563-2"), True),
    (obs("93193-1"), True),
    (obs("therapeutic-implication", system=TBD), True),      # gene may come from derivedFrom
    (obs("84413-4"), True),                                  # gene may be in the value
    (obs("84413-4", component=[gene(NUDT15_ID)]), True),
    (obs("84413-4", component=[gene(TPMT_ID, "http://www.genenames.org/geneId")]), True),
    (obs("84413-4", component=[{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                                "valueCodeableConcept": {"text": "CYP2C19"}}]), False),
    (obs("777-3"), False),                                   # platelets
    (obs("79713-4", system="http://example.org/local"), False),
    (obs("51963-7"), False),
    ({"resourceType": "Observation", "code": {"text": "TPMT"}}, False),
])
def test_is_relevant(pgx, observation, expected):
    assert pgx.is_relevant(observation) is expected


# ---- loading the knowledge ---------------------------------------------------------------

def test_shipped_knowledge_loads_and_covers_every_phenotype(pgx, data):
    assert set(data["phenotypes"]["labels"]) == set(PHENOTYPES)
    assert "79713-4" in pgx.prefetch_codes() and "therapeutic-implication" in pgx.prefetch_codes()
    assert "79713-8" not in yaml.safe_dump(data) and "79714-6" not in yaml.safe_dump(data)


def broken(data: dict, change) -> dict:
    copied = copy.deepcopy(data)
    change(copied)
    return copied


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("pair_rules"), "pair_rules"),
    (lambda d: d.pop("genes"), "genes"),
    (lambda d: d["genes"]["NUDT15"]["alleles"]["functions"].update({"*4": "decreased"}),
     "decreased"),
    (lambda d: d["pair_rules"]["rules"].pop(), "no phenotype for"),
    (lambda d: d["genes"]["TPMT"]["codes"]["phenotype"][0].update(code="79713-8"),
     "check digit"),
    (lambda d: d["genes"]["TPMT"]["codes"]["phenotype"][0].update(source="nowhere"),
     "unknown source"),
    (lambda d: d["answers"][0].pop("source"), "names no source"),
    (lambda d: d["answers"][0].update(phenotype="slow"), "slow"),
    (lambda d: d["genes"]["NUDT15"].update(hgnc="HGNC:12014"), "repeated"),
    (lambda d: d["generic_codes"]["genotype"].append(
        {"code": "79713-4", "source": "kt-vs"}), "another meaning"),
    (lambda d: d["activity"]["interpretation_codes"].update({False: "normal"}), "quote it"),
])
def test_from_data_rejects_broken_knowledge(data, change, message):
    with pytest.raises(KnowledgeError, match=message):
        PgxKnowledge.from_data(broken(data, change))
