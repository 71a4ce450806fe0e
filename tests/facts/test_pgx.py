"""The PGx reader (cds_service/facts/pgx.py): every form a TPMT/NUDT15 result arrives in, read to
a CPIC phenotype per gene. Codes come from cards/pgx.yaml, never copied here."""

from __future__ import annotations

from collections import Counter
from itertools import combinations_with_replacement
from types import SimpleNamespace

import pytest

from cds_service.facts.pgx import read_pgx

LOCAL = "http://example.org/fhir/local-codes"   # a code system the service does not know


@pytest.fixture(scope="module")
def c(knowledge) -> SimpleNamespace:
    """The codes a result uses, by role, from cards/pgx.yaml."""
    spec = knowledge.pgx.spec
    loinc = spec.systems.loinc
    generic = spec.generic_codes
    tpmt = spec.genes["TPMT"].codes
    return SimpleNamespace(
        loinc=loinc, hgnc=spec.systems.hgnc, interpretation=spec.systems.interpretation,
        phenotype=(loinc, tpmt.phenotype[0].code),
        legacy=next((loinc, e.code) for e in generic.phenotype if not e.system),
        implication=next((e.system, e.code) for e in generic.phenotype if e.system),
        genotype=(loinc, generic.genotype[0].code),
        activity=(loinc, tpmt.activity[0].code),
        panel=next((loinc, e.code) for e in tpmt.genotype
                   if e.code in {n.code for n in spec.genes["NUDT15"].codes.genotype}),
        genotypes={gene: [(loinc, e.code) for e in [*g.codes.genotype, *generic.genotype]]
                   for gene, g in spec.genes.items()},
        gene_studied=spec.components.gene_studied.code,
        medication=spec.components.medication_assessed.code,
        hgnc_id={gene: g.hgnc for gene, g in spec.genes.items()},
        answer={a.phenotype: a.code for a in reversed(spec.answers)},   # first answer wins
        not_ours=[a.code for a in spec.answers if a.phenotype == "unknown"],
        blood_count=(loinc, knowledge.labs.analytes["platelets"].codes[0]),
        alleles={gene: list(g.alleles.functions) for gene, g in spec.genes.items()},
    )


def obs(code: tuple[str, str], oid: str = "o1", date: str | None = "2024-03-01",
        **fields) -> dict:
    system, value = code
    resource = {"resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": system, "code": value}]}, **fields}
    if date:
        resource["effectiveDateTime"] = date
    return resource


def la(c: SimpleNamespace, phenotype: str, display: str = "") -> dict:
    coding = {"system": c.loinc, "code": c.answer[phenotype]}
    return {"coding": [{**coding, "display": display} if display else coding]}


def gene(c: SimpleNamespace, symbol: str, system: int = 0) -> dict:
    return {"code": {"coding": [{"system": c.loinc, "code": c.gene_studied}]},
            "valueCodeableConcept": {"coding": [{"system": c.hgnc[system],
                                                 "code": c.hgnc_id[symbol]}]}}


def drug(c: SimpleNamespace, name: str) -> dict:
    return {"code": {"coding": [{"system": c.loinc, "code": c.medication}]},
            "valueCodeableConcept": {"text": name}}


def implication(c: SimpleNamespace, value: dict) -> dict:
    system, code = c.implication
    return {"code": {"coding": [{"system": system, "code": code}]}, "valueCodeableConcept": value}


@pytest.fixture
def read(knowledge):
    def read(*observations: dict):
        return read_pgx(tuple(observations), knowledge, True)
    return read


# ---- phenotype form ----------------------------------------------------------------------

def test_la_code_on_the_tpmt_phenotype_code(read, c):
    found = read(obs(c.phenotype, "p1", valueCodeableConcept=la(c, "poor", "Poor metabolizer")))
    assert found.problems == () and found.complete
    r = found.by_gene["TPMT"]
    assert (r.gene, r.phenotype, r.form) == ("TPMT", "poor", "phenotype")
    assert (r.resource, r.effective) == ("Observation/p1", "2024-03-01")
    assert r.detail == f'{c.answer["poor"]} "Poor metabolizer"'
    assert set(found.by_gene) == {"TPMT"}


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
def test_phenotype_text(read, c, field, value, expected):
    found = read(obs(c.phenotype, **{field: value}))
    assert found.problems == ()
    assert found.by_gene["TPMT"].phenotype == expected
    assert found.by_gene["TPMT"].form == "phenotype"


@pytest.mark.parametrize("value", [
    "ultrarapid/rapid answer",                    # LA answers that are not TPMT phenotypes
    {"valueString": "heterozygous"},              # lab wording that does not say the phenotype
    {"valueString": "NUDT15 Poor Metabolizer"},   # the wrong gene on a TPMT code
    {},                                           # no value at all
])
def test_phenotype_that_cannot_be_read_is_reported(read, c, value):
    values = ([{"valueCodeableConcept": {"coding": [{"system": c.loinc, "code": code}]}}
               for code in c.not_ours] if isinstance(value, str) else [value])
    assert values
    for fields in values:
        found = read(obs(c.phenotype, "bad", **fields))
        assert found.by_gene == {}
        assert len(found.problems) == 1 and found.problems[0].startswith("Observation/bad")
        assert not found.complete


def test_legacy_generic_phenotype_takes_the_gene_from_its_component(read, c):
    legacy = obs(c.legacy, valueCodeableConcept=la(c, "intermediate", "Intermediate metabolizer"),
                 component=[gene(c, "TPMT", system=1), drug(c, "azathioprine")])
    found = read(legacy)
    assert found.problems == ()
    assert found.by_gene["TPMT"].phenotype == "intermediate"
    assert found.by_gene["TPMT"].detail.endswith(" for azathioprine")


def test_legacy_generic_phenotype_also_coded_for_tpmt_takes_the_gene_from_the_code(read, c):
    legacy = obs(c.legacy, valueCodeableConcept=la(c, "normal"))
    legacy["code"]["coding"].append({"system": c.phenotype[0], "code": c.phenotype[1]})
    found = read(legacy)
    assert found.problems == () and found.by_gene["TPMT"].phenotype == "normal"


def test_therapeutic_implication_takes_the_gene_from_its_component(read, c):
    ti = obs(c.implication, component=[gene(c, "NUDT15"), drug(c, "azathioprine"),
                                       implication(c, la(c, "poor", "Poor metabolizer"))])
    found = read(ti)
    assert found.problems == ()
    assert set(found.by_gene) == {"NUDT15"}
    assert (found.by_gene["NUDT15"].phenotype, found.by_gene["NUDT15"].form) == (
        "poor", "phenotype")


def test_therapeutic_implication_takes_the_gene_from_the_genotype_it_derives_from(read, c):
    genotype = obs(c.genotype, "g1", valueString="*1/*1", component=[gene(c, "TPMT")])
    ti = obs(c.implication, "t1", date="2024-05-01",
             derivedFrom=[{"reference": "Observation/g1"}],
             component=[implication(c, la(c, "intermediate"))])
    found = read(genotype, ti)
    assert found.problems == ()
    # the implication (later) wins over the genotype it was derived from
    assert found.by_gene["TPMT"].phenotype == "intermediate"
    assert found.by_gene["TPMT"].resource == "Observation/t1"


def test_therapeutic_implication_takes_the_gene_from_its_text(read, c):
    ti = obs(c.implication, component=[implication(c, {"text": "NUDT15 Intermediate Metabolizer"})])
    found = read(ti)
    assert found.problems == () and found.by_gene["NUDT15"].phenotype == "intermediate"


def test_a_generic_result_without_any_gene_is_ignored_quietly(read, c):
    # e.g. a CYP2C19 implication with no gene component: not ours, not a problem either
    ti = obs(c.implication, component=[implication(c, la(c, "poor"))])
    genotype = obs(c.genotype, "g2", valueString="*1/*2")
    found = read(ti, genotype)
    assert (found.by_gene, found.problems, found.complete) == ({}, (), True)


def test_conflicting_genes_are_reported(read, c):
    tpmt_code_nudt15_component = obs(c.phenotype, valueString="Poor Metabolizer",
                                     component=[gene(c, "NUDT15")])
    found = read(tpmt_code_nudt15_component)
    assert found.by_gene == {} and len(found.problems) == 1


# ---- which observations are TPMT/NUDT15 results ------------------------------------------

def _observations(c: SimpleNamespace) -> dict[str, tuple[dict, str | None]]:
    """What an observation is -> (it, the gene it must give, or None: ignored, no problem)."""
    cyp = {"code": {"coding": [{"system": c.loinc, "code": c.gene_studied}]},
           "valueCodeableConcept": {"text": "CYP2C19"}}
    return {
        "TPMT phenotype code": (obs(c.phenotype, valueString="Poor Metabolizer"), "TPMT"),
        "TPMT activity code": (obs(c.activity, valueQuantity={"value": 5, "unit": "U/mL"},
                                   interpretation=[{"text": "deficient"}]), "TPMT"),
        "TPMT and NUDT15 panel": (obs(c.panel, valueString="NUDT15 *1/*3"), "NUDT15"),
        "implication, gene in its text": (obs(c.implication, component=[implication(
            c, {"text": "TPMT Poor Metabolizer"})]), "TPMT"),
        "generic genotype, gene in the value": (obs(c.genotype, valueString="TPMT *1/*3A"),
                                                "TPMT"),
        "generic genotype, NUDT15 component": (obs(c.genotype, valueString="*1/*3", component=[
            gene(c, "NUDT15")]), "NUDT15"),
        "generic genotype, older HGNC system": (obs(c.genotype, valueString="*1/*3A", component=[
            gene(c, "TPMT", 1)]), "TPMT"),
        "generic genotype of another gene": (obs(c.genotype, valueString="TPMT *1/*3A",
                                                 component=[cyp]), None),
        "a blood count code": (obs(c.blood_count, valueString="TPMT Poor Metabolizer"), None),
        "the phenotype code in another system": (obs((LOCAL, c.phenotype[1]),
                                                      valueString="Poor Metabolizer"), None),
        "the medication-assessed code": (obs((c.loinc, c.medication),
                                              valueString="TPMT Poor Metabolizer"), None),
        # no code the service knows, but its name names the gene: read, never dropped
        "text only": ({"resourceType": "Observation", "id": "o1", "status": "final",
                       "code": {"text": "TPMT"}, "valueString": "Poor Metabolizer"}, "TPMT"),
    }


@pytest.mark.parametrize("what", [
    "TPMT phenotype code", "TPMT activity code", "TPMT and NUDT15 panel",
    "implication, gene in its text", "generic genotype, gene in the value",
    "generic genotype, NUDT15 component", "generic genotype, older HGNC system",
    "generic genotype of another gene", "a blood count code",
    "the phenotype code in another system", "the medication-assessed code", "text only"])
def test_which_observations_are_read(read, c, what):
    observation, expected = _observations(c)[what]
    found = read(observation)
    assert found.problems == ()
    assert list(found.by_gene) == ([expected] if expected else [])


def test_a_malformed_result_is_reported_not_dropped(read, c):
    """A component of the wrong JSON type still names our code: said, never silently skipped."""
    malformed = obs(c.genotype, "m", valueString="*1/*3A", component=[{"code": "gene studied"}])
    found = read(malformed)
    assert found.by_gene == {} and not found.complete
    assert len(found.problems) == 1 and found.problems[0].startswith("Observation/m")


def test_other_resources_and_uncounted_statuses_are_not_results(read, c):
    poor = {"valueCodeableConcept": la(c, "poor")}
    found = read({**obs(c.phenotype, **poor), "resourceType": "DiagnosticReport"},
                 obs(c.phenotype, "error", status="entered-in-error", **poor),
                 obs(c.phenotype, "pending", status="registered", **poor))
    assert (found.by_gene, found.problems) == ({}, ())
    amended = read(obs(c.phenotype, status="amended", **poor))
    assert amended.by_gene["TPMT"].phenotype == "poor"


def test_a_preliminary_result_is_evidence_and_says_so(read, c):
    found = read(obs(c.phenotype, "prelim", status="preliminary",
                     valueCodeableConcept=la(c, "poor")))
    r = found.by_gene["TPMT"]
    assert (r.phenotype, r.status, found.problems) == ("poor", "preliminary", ())


# ---- diplotype form ----------------------------------------------------------------------

DIPLOTYPES = [
    ("TPMT", "*1/*1", "normal"),
    ("TPMT", "*1/*3A", "intermediate"),
    ("TPMT", "*3A/*3C", "poor"),
    ("TPMT", "*3a/*3c", "poor"),                    # case of the suballele letter
    ("TPMT", "*3A/*5", "possible_intermediate"),    # no + uncertain
    ("TPMT", "*30/*2", "possible_intermediate"),    # unknown + no
    ("TPMT", "*1/*5", "indeterminate"),             # normal + uncertain
    ("TPMT", "*30/*35", "indeterminate"),           # unknown + unknown
    ("TPMT", "*1/*42", "indeterminate"),            # allele not in the table
    ("NUDT15", "*1/*3", "intermediate"),
    ("NUDT15", "*3/*9", "poor"),                    # *9 no function since 2019
    ("NUDT15", "*1/*4", "indeterminate"),
    ("NUDT15", "*2/*6", "possible_intermediate"),
    ("NUDT15", "*1/*15", "indeterminate"),          # not in the table
]


@pytest.mark.parametrize(("symbol", "diplotype", "expected"), DIPLOTYPES)
def test_diplotype_on_every_genotype_code_of_the_gene(read, c, symbol, diplotype, expected):
    for code in c.genotypes[symbol]:
        observation = obs(code, valueCodeableConcept={"text": f"{symbol} {diplotype}"},
                          component=[gene(c, symbol)])
        found = read(observation)
        assert found.problems == (), code
        assert found.by_gene[symbol].phenotype == expected, code
        assert found.by_gene[symbol].form == "diplotype"


def test_diplotype_detail_names_the_alleles_read(read, c):
    genotype = obs(c.genotype, "abc", valueCodeableConcept={
        "coding": [{"system": "http://www.pharmvar.org", "display": "TPMT *1/*3a"}]})
    r = read(genotype).by_gene["TPMT"]
    assert (r.detail, r.resource, r.effective) == ("*1/*3A", "Observation/abc", "2024-03-01")
    unlisted = read(obs(c.genotype, valueString="TPMT *1/*42")).by_gene["TPMT"]
    assert unlisted.detail == "*1/*42 (*42 has no CPIC function in the table)"


@pytest.mark.parametrize("value", ["*1/", "1/3A", "*1/*3A or *3B/*3C", "TPMT", "*1-*3A"])
def test_malformed_diplotype_is_reported(read, c, value):
    found = read(obs(c.genotypes["TPMT"][0], "m1", valueString=value))
    assert found.by_gene == {}
    assert len(found.problems) == 1 and "Observation/m1" in found.problems[0]


def test_combined_panel_reads_both_genes(read, c):
    found = read(obs(c.panel, valueString="TPMT *1/*1; NUDT15 *1/*3"))
    assert found.problems == ()
    assert found.by_gene["TPMT"].phenotype == "normal"
    assert found.by_gene["NUDT15"].phenotype == "intermediate"


def test_combined_panel_without_a_gene_is_reported(read, c):
    found = read(obs(c.panel, valueString="*1/*3"))
    assert found.by_gene == {} and len(found.problems) == 1


def test_every_allele_pair_matches_the_cpic_counts(read, c):
    """clinical-knowledge.md 2.1 lists how many diplotypes give each phenotype (PharmCAT)."""
    expected = {
        "TPMT": {"normal": 1, "intermediate": 11, "possible_intermediate": 341, "poor": 66,
                 "indeterminate": 31 + 496},
        "NUDT15": {"normal": 1, "intermediate": 3, "possible_intermediate": 15, "poor": 6,
                   "indeterminate": 5 + 15},
    }
    for symbol, counts in expected.items():
        seen = Counter()
        for first, second in combinations_with_replacement(c.alleles[symbol], 2):
            found = read(obs(c.genotype, valueString=f"{symbol} {first}/{second}"))
            assert found.problems == ()
            seen[found.by_gene[symbol].phenotype] += 1
        assert seen == counts, symbol


# ---- activity form -----------------------------------------------------------------------

def activity(c: SimpleNamespace, value: float | None = 12.0, interpretation: list | None = None,
             ranges: list | None = None, oid: str = "a1") -> dict:
    fields: dict = {}
    if value is not None:
        fields["valueQuantity"] = {"value": value, "unit": "U/mL"}
    if interpretation is not None:
        fields["interpretation"] = interpretation
    if ranges is not None:
        fields["referenceRange"] = ranges
    return obs(c.activity, oid, **fields)


def rng(low: float | None = None, high: float | None = None, text: str | None = None) -> dict:
    result: dict = {}
    if low is not None:
        result["low"] = {"value": low, "unit": "U/mL"}
    if high is not None:
        result["high"] = {"value": high, "unit": "U/mL"}
    if text:
        result["text"] = text
    return result


@pytest.mark.parametrize(("interpretation", "expected"), [
    (["LL"], "poor"),
    (["L"], "intermediate_or_poor"),                 # low: intermediate or deficient
    (["N"], "normal"),
    (["H"], "normal"),                               # high activity is not deficiency
    ([{"text": "Deficient"}], "poor"),
    ([{"text": "Intermediate"}], "intermediate"),
    ([{"coding": [{"display": "Low"}]}], "intermediate_or_poor"),
    (["L", {"text": "absent"}], "poor"),             # several flags: the most severe
])
def test_activity_by_interpretation(read, c, interpretation, expected):
    flags = [{"coding": [{"system": c.interpretation, "code": f}]} if isinstance(f, str) else f
             for f in interpretation]
    r = read(activity(c, interpretation=flags)).by_gene["TPMT"]
    assert (r.phenotype, r.form) == (expected, "activity")


@pytest.mark.parametrize(("value", "ranges", "expected"), [
    (20.0, [rng(24.0, 44.0)], "intermediate"),             # below low
    (30.0, [rng(24.0, 44.0)], "normal"),                   # within
    (24.0, [rng(24.0, 44.0)], "normal"),                   # at the low bound
    (50.0, [rng(24.0, 44.0)], "normal"),                   # above: not deficiency
    (10.0, [rng(24.0, 44.0), rng(high=16.9, text="Deficient")], "poor"),
    (20.0, [rng(24.0, 44.0), rng(high=16.9, text="Deficient")], "intermediate"),
    (8.0, [rng(26, 50, text="normal")], "intermediate_or_poor"),   # 0.31 of a labelled range
    # against the lower limit (24): below 0.15 every lab calls it deficient, from 0.71 on
    # every lab calls it intermediate, in between labs disagree
    (3.5, [rng(24.0, 44.0)], "poor"),
    (3.6, [rng(24.0, 44.0)], "intermediate_or_poor"),
    (17.0, [rng(24.0, 44.0)], "intermediate_or_poor"),
    (17.1, [rng(24.0, 44.0)], "intermediate"),
])
def test_activity_by_reference_range(read, c, value, ranges, expected):
    found = read(activity(c, value, ranges=ranges))
    assert found.problems == ()
    assert found.by_gene["TPMT"].phenotype == expected


def test_activity_detail_shows_the_basis(read, c):
    r = read(activity(c, 20.0, ranges=[rng(24.0, 44.0)])).by_gene["TPMT"]
    assert r.detail == ("activity 20 U/mL, 0.83 of the lower limit of the reference range"
                        " 24-44 U/mL")
    flagged = read(activity(c, 20.0, [{"coding": [{"system": c.interpretation, "code": "LL"}]}]))
    assert flagged.by_gene["TPMT"].detail == "activity 20 U/mL, flagged LL"


def test_activity_interpretation_beats_reference_range(read, c):
    flag = [{"coding": [{"system": c.interpretation, "code": "LL"}]}]
    assert read(activity(c, 20.0, flag, [rng(24.0, 44.0)])).by_gene["TPMT"].phenotype == "poor"


@pytest.mark.parametrize("fields", [
    {},                                                                  # neither
    {"ranges": [{"low": {"value": 24, "unit": "nmol/h/g Hb"}}]},         # other units
    {"interpretation": [{"text": "see comment"}]},                       # words we don't know
    {"value": None, "ranges": [rng(24.0, 44.0)]},                        # range but no value
])
def test_activity_that_cannot_be_read_is_reported(read, c, fields):
    found = read(activity(c, **fields))
    assert found.by_gene == {}
    assert len(found.problems) == 1 and "Observation/a1" in found.problems[0]


def test_activity_never_applies_to_nudt15(read, c):
    mislabelled = obs(c.activity, valueQuantity={"value": 5},
                      interpretation=[{"coding": [{"system": c.interpretation, "code": "LL"}]}],
                      component=[gene(c, "NUDT15")])
    found = read(mislabelled)
    assert found.by_gene == {} and len(found.problems) == 1


# ---- which result wins -------------------------------------------------------------------

def test_the_more_severe_result_governs_and_the_conflict_is_kept(read, c):
    """A newer normal result (e.g. activity after a transfusion) never erases an older poor."""
    old = obs(c.phenotype, "old", "2020-01-01", valueCodeableConcept=la(c, "poor"))
    new = obs(c.genotypes["TPMT"][0], "new", "2024-06-01", valueString="*1/*1")
    for order in ((old, new), (new, old)):
        found = read(*order)
        r = found.by_gene["TPMT"]
        assert (r.resource, r.phenotype) == ("Observation/old", "poor")
        assert [x.resource for x in found.results["TPMT"]] == ["Observation/new",
                                                                "Observation/old"]
        assert found.conflict("TPMT") and found.uncertain


def test_words_in_an_activity_result_count(read, c):
    note = {"note": [{"text": "TPMT activity deficient: avoid thiopurines"}]}
    found = read(obs(c.activity, valueQuantity={"value": 12, "unit": "U/mL"}, **note))
    assert found.by_gene["TPMT"].phenotype == "poor"


def test_partial_dates_and_issued_rank_correctly(read, c):
    """Of equally severe results the newest governs."""
    year_only = obs(c.phenotype, "y", "2024", valueString="Poor Metabolizer")
    issued = obs(c.phenotype, "i", None, valueString="Poor Metabolizer",
                 issued="2023-12-31T23:00:00-05:00")   # 2024-01-01T04:00Z: after "2024"
    r = read(year_only, issued).by_gene["TPMT"]
    assert (r.resource, r.effective) == ("Observation/i", "2023-12-31")   # the date as given


def test_an_undated_result_ranks_last(read, c):
    undated = obs(c.phenotype, "u", None, valueString="Poor Metabolizer")
    dated = obs(c.phenotype, "d", "2010-01-01", valueString="Poor Metabolizer")
    for order in ((undated, dated), (dated, undated)):
        assert read(*order).by_gene["TPMT"].resource == "Observation/d"
    assert read(undated).by_gene["TPMT"].effective == "undated"


def test_a_same_date_tie_goes_to_the_more_severe(read, c):
    a = obs(c.phenotype, "a", valueString="Normal Metabolizer")
    b = obs(c.phenotype, "b", valueString="Poor Metabolizer")
    for order in ((a, b), (b, a)):
        assert read(*order).by_gene["TPMT"].phenotype == "poor"


def test_an_unreadable_latest_falls_back_to_the_earlier_and_is_reported(read, c):
    code = c.genotypes["TPMT"][0]
    earlier = obs(code, "e", "2020-01-01", valueString="*1/*3A")
    latest = obs(code, "l", "2024-01-01", valueString="*1/*3A or *3B/*3C")
    found = read(earlier, latest)
    r = found.by_gene["TPMT"]
    assert (r.resource, r.phenotype) == ("Observation/e", "intermediate")
    assert len(found.problems) == 1 and found.problems[0].startswith("Observation/l")
    assert not found.complete


def test_an_invalid_date_is_reported(read, c):
    found = read(obs(c.phenotype, "x", "23/11/2024", valueCodeableConcept=la(c, "poor")))
    assert found.by_gene == {}
    assert found.problems == ("Observation/x: effectiveDateTime is not a valid FHIR dateTime;"
                              " result not used",)


def test_a_missing_id_names_the_resource_type(read, c):
    anonymous = obs(c.phenotype, valueString="Poor Metabolizer")
    del anonymous["id"]
    assert read(anonymous).by_gene["TPMT"].resource == "Observation"


def test_results_that_could_not_be_had_are_incomplete(knowledge, c):
    found = read_pgx((obs(c.phenotype, valueCodeableConcept=la(c, "normal")),), knowledge, False)
    assert found.by_gene["TPMT"].phenotype == "normal" and not found.complete


# ---- found by the mutation check (tools/mutation.sh) ---------------------------------

def flag(c: SimpleNamespace, code: str, system: str | None = None) -> dict:
    return {"coding": [{"system": system or c.interpretation, "code": code}]}


def test_activity_detail_without_a_value_or_a_unit(read, c):
    assert read(activity(c, None, [flag(c, "LL")])).by_gene["TPMT"].detail == (
        "activity, flagged LL")
    unitless = obs(c.activity, "a1", valueQuantity={"value": 20}, interpretation=[flag(c, "LL")])
    assert read(unitless).by_gene["TPMT"].detail == "activity 20, flagged LL"


def test_activity_problems_name_the_gene_and_the_element(read, c):
    assert read(activity(c)).problems == (
        "Observation/a1: TPMT activity 12 U/mL has no interpretation or reference range the "
        "service can read (cut-offs differ by lab); result not used",)
    bad = obs(c.activity, "a1", valueQuantity={"value": "12", "unit": "U/mL"})
    assert read(bad).problems == (
        "Observation/a1: valueQuantity.value is not a number; result not used",)


def test_the_most_severe_activity_reading_governs_and_all_are_shown(read, c):
    r = read(activity(c, 20.0, [flag(c, "N")], [rng(24.0, 44.0)])).by_gene["TPMT"]
    assert r.phenotype == "intermediate"
    assert r.detail == ("activity 20 U/mL, flagged N; 0.83 of the lower limit of the reference "
                        "range 24-44 U/mL")


@pytest.mark.parametrize(("fields", "expected"), [
    (lambda c: {"valueString": "TPMT DEFICIENT"}, "poor"),               # words in any case
    (lambda c: {"valueCodeableConcept": {"text": "Deficient"}}, "poor"),
    (lambda c: {"interpretation": [{"text": "Deficient activity: avoid thiopurines"}]}, "poor"),
    (lambda c: {"valueString": "deficient", "note": [{"text": "see report"}]}, "poor"),
    (lambda c: {"valueString": "deficient", "note": [{"authorString": "lab"}]}, "poor"),
    (lambda c: {"valueString": "heterozygous", "note": [{"text": "deficient"}]}, "poor"),
    (lambda c: {"interpretation": ["junk", flag(c, "LL")]}, "poor"),     # malformed, skipped
    (lambda c: {"interpretation": [{"coding": ["junk", *flag(c, "LL")["coding"]]}]}, "poor"),
    (lambda c: {"interpretation": [{"text": "Low"}]}, "intermediate_or_poor"),   # as text
    (lambda c: {"interpretation": [flag(c, "N"), flag(c, "L")]}, "intermediate_or_poor"),
    (lambda c: {"interpretation": [flag(c, "LL", LOCAL)],               # another system's LL
                "valueQuantity": {"value": 30, "unit": "U/mL"},
                "referenceRange": [rng(24.0, 44.0)]}, "normal"),
])
def test_activity_words_and_flags(read, c, fields, expected):
    found = read(obs(c.activity, "a1", **fields(c)))
    assert found.problems == ()
    assert found.by_gene["TPMT"].phenotype == expected


@pytest.mark.parametrize(("value", "ranges", "expected", "basis"), [
    (20.0, [rng(24.0)], "intermediate",
     "0.83 of the lower limit of the reference range >= 24 U/mL"),
    (20.0, [{"low": {"value": 24, "unit": "nmol/h/g Hb"}}, rng(24.0, 44.0)], "intermediate",
     "0.83 of the lower limit of the reference range 24-44 U/mL"),
    (30.0, [rng(24.0, 44.0)], "normal", "within or above the reference range 24-44 U/mL"),
    (10.0, [rng(24.0, 44.0), rng(high=16.9, text="Deficient")], "poor",
     "in the lab's deficient range <= 16.9 U/mL"),
    (10.0, [rng(high=24.0, text="Intermediate"), rng(high=16.9, text="Deficient")], "poor",
     "in the lab's deficient range <= 16.9 U/mL"),             # overlapping bands: most severe
    # a band holds its bounds; below a band is not in it
    (5.0, [rng(5.0, 17.0, "Intermediate"), rng(24.0, 44.0)], "intermediate", None),
    (17.0, [rng(5.0, 17.0, "Intermediate"), rng(24.0, 44.0)], "intermediate", None),
    (3.0, [rng(5.0, 17.0, "Intermediate"), rng(24.0, 44.0)], "poor", None),
    (16.9, [rng(high=16.9, text="Deficient"), rng(24.0, 44.0)], "poor", None),
    # a band in another unit is skipped, whichever bound carries the unit
    (10.0, [rng(24.0, 44.0), {"high": {"value": 16.9, "unit": "nmol/h/g Hb"}, "text": "Deficient"}],
     "intermediate_or_poor", None),
    (71.0, [rng(100.0, 200.0)], "intermediate", None),          # exactly 0.71 of the lower limit
    (0.4, [rng(0.5, 1.0)], "intermediate", None),               # a lower limit below 1
    (-1.0, [rng(0.0, 44.0)], "poor", None),                     # below a lower limit of 0
])
def test_activity_against_ranges_and_bands(read, c, value, ranges, expected, basis):
    found = read(activity(c, value, ranges=ranges))
    assert found.problems == ()
    r = found.by_gene["TPMT"]
    assert r.phenotype == expected
    if basis:
        assert r.detail == f"activity {value:g} U/mL, {basis}"


@pytest.mark.parametrize("band", [
    {"type": {"text": "Deficient"}},
    {"type": {"coding": [{"display": "Deficient"}]}},
    {"type": {"coding": [{"code": "deficient"}]}},
    {"type": {"coding": [{"code": "x-17", "display": "Deficient"}]}},   # the display names it
])
def test_a_band_labelled_by_its_type(read, c, band):
    found = read(activity(c, 10.0, ranges=[rng(24.0, 44.0), {**rng(high=16.9), **band}]))
    assert found.by_gene["TPMT"].phenotype == "poor"
    assert "in the lab's deficient range <= 16.9 U/mL" in found.by_gene["TPMT"].detail


def test_units_compare_by_code_and_unitless_ranges_read(read, c):
    coded = {"value": 24, "unit": "units per mL", "code": "U/mL"}
    found = read(obs(c.activity, "a1", valueQuantity={"value": 20, "unit": "U/mL", "code": "U/mL"},
                     referenceRange=[{"low": coded, "high": {**coded, "value": 44}}]))
    assert found.by_gene["TPMT"].phenotype == "intermediate"
    unitless = read(obs(c.activity, "a1", valueQuantity={"value": 20},
                        referenceRange=[{"low": {"value": 24}, "high": {"value": 44}}]))
    assert unitless.by_gene["TPMT"].detail == (
        "activity 20, 0.83 of the lower limit of the reference range 24-44")


@pytest.mark.parametrize("ranges", [
    [rng(high=16.9, text="Deficient")],         # a band that does not hold it, and no normal range
    [rng(24.0, 44.0, text="see comment")],      # a range labelled in words we don't know
])
def test_a_value_no_usable_range_places_is_reported(read, c, ranges):
    found = read(activity(c, 20.0, ranges=ranges))
    assert found.by_gene == {} and len(found.problems) == 1


def test_a_malformed_range_bound_is_reported_not_read_as_normal(read, c):
    """Read as absent, the bound would make an activity of 5 U/mL normal."""
    malformed = {"low": {"value": "24", "unit": "U/mL"}, "high": {"value": 44, "unit": "U/mL"}}
    found = read(activity(c, 5.0, ranges=[malformed]))
    assert "TPMT" not in found.by_gene
    assert len(found.problems) == 1
    assert "referenceRange[0].low.value is not a number" in found.problems[0]


def test_an_upper_limit_alone_does_not_make_a_low_activity_normal(read, c):
    """An upper limit says nothing about deficiency."""
    found = read(activity(c, 5.0, ranges=[rng(high=44.0)]))
    assert found.by_gene.get("TPMT") is None or found.by_gene["TPMT"].phenotype != "normal"


# ---- the gene of a result derived from a genotype -----------------------------------------

def tpmt_only_genotype(c: SimpleNamespace) -> tuple[str, str]:
    """A genotype code of TPMT alone (not the TPMT/NUDT15 panel, not a generic code)."""
    return next(code for code in c.genotypes["TPMT"]
                if code not in c.genotypes["NUDT15"])


def derived(c: SimpleNamespace, *refs: object, oid: str = "t1") -> dict:
    return obs(c.implication, oid, date="2024-05-01", derivedFrom=list(refs),
               component=[implication(c, la(c, "poor"))])


@pytest.mark.parametrize("refs", [
    ["not a reference", {"reference": "Observation/g1"}],
    [{"reference": "MolecularSequence/s1"}, {"display": "genotype"},
     {"reference": "https://fhir.example.org/Observation/g1/_history/2"}],
])
def test_the_gene_from_a_genotype_coded_for_it(read, c, refs):
    genotype = obs(tpmt_only_genotype(c), "g1", valueString="*1/*1")
    found = read(genotype, derived(c, *refs))
    assert found.problems == ()
    assert (found.by_gene["TPMT"].phenotype, found.by_gene["TPMT"].resource) == (
        "poor", "Observation/t1")


def test_the_gene_from_a_genotype_naming_it_in_its_value(read, c):
    genotype = obs(c.genotype, "g1", valueString="TPMT *1/*1")
    found = read(genotype, derived(c, {"reference": "Observation/g1"}))
    assert found.problems == () and found.by_gene["TPMT"].resource == "Observation/t1"


def test_the_gene_from_the_results_own_text_when_its_genotype_is_missing(read, c):
    result = derived(c, {"reference": "Observation/not-sent"})
    result["code"]["text"] = "TPMT drug implication"
    found = read(result)
    assert found.problems == () and found.by_gene["TPMT"].phenotype == "poor"


def test_the_gene_from_an_uncoded_component(read, c):
    named = {"code": {"coding": [{"system": LOCAL, "code": "gene"}]},
             "valueCodeableConcept": {"text": "TPMT"}}
    found = read(obs(c.implication, component=[implication(c, la(c, "poor")), named]))
    assert found.problems == () and found.by_gene["TPMT"].phenotype == "poor"


def test_genotypes_of_two_genes_behind_one_result_are_reported(read, c):
    tpmt = obs(tpmt_only_genotype(c), "g1", valueString="*1/*1")
    nudt15 = obs(c.genotype, "g2", valueString="*1/*1", component=[gene(c, "NUDT15")])
    mixed = obs(tpmt_only_genotype(c), "g3", valueString="*1/*1", component=[gene(c, "NUDT15")])
    for refs in (["Observation/g1", "Observation/g2"], ["Observation/g3"]):
        found = read(tpmt, nudt15, mixed, derived(c, *({"reference": r} for r in refs)))
        assert "Observation/t1" not in {r.resource for rs in found.results.values() for r in rs}
        assert any(p.startswith("Observation/t1") for p in found.problems), refs
