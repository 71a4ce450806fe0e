"""Blood counts (cds_service/facts/counts.py): units normalised to 10^9/L (stated or inferred),
the latest count and the earlier peak per analyte in the look-back window, only counted statuses,
and every invalid element reported. Codes and units come from cards/labs.yaml."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from cds_service.facts.counts import read_counts
from cds_service.fhir_read import parse_time

from ..factories import NOW, Factory, when


@pytest.fixture
def f(knowledge) -> Factory:
    return Factory(knowledge)


@pytest.fixture
def read(knowledge):
    def read(*observations: dict, complete: bool = True):
        return read_counts(tuple(observations), knowledge, NOW, complete)
    return read


def values(counts, analyte: str) -> list[float]:
    return [round(c.value, 6) for c in counts.by_analyte.get(analyte, ())]


def taken(observation: dict) -> datetime:
    return parse_time(observation["effectiveDateTime"])


# ---- units ---------------------------------------------------------------------------------

def test_every_unit_of_the_knowledge_is_normalised(knowledge, f, read):
    assert knowledge.labs.units.factors
    for unit, factor in knowledge.labs.units.factors.items():
        counts = read(f.count("neutrophils", 2000, unit=unit))
        assert counts.problems == (), unit
        (count,) = counts.by_analyte["neutrophils"]
        assert count.value == pytest.approx(2000 * factor), unit
        assert not count.inferred_unit


def test_the_ucum_code_wins_over_the_display_unit(f, read):
    count = f.count("platelets", 45)
    count["valueQuantity"]["unit"] = "thousand per microlitre"
    assert values(read(count), "platelets") == [45]


@pytest.mark.parametrize("analyte, value, expected", [
    ("platelets", 45, 45), ("platelets", 45_000, 45), ("neutrophils", 0.5, 0.5),
    ("neutrophils", 800, 0.8), ("leukocytes", 3400, 3.4),
])
def test_a_missing_unit_is_inferred_from_the_value(f, read, analyte, value, expected):
    counts = read(f.count(analyte, value, unit=None))
    assert counts.problems == ()
    (count,) = counts.by_analyte[analyte]
    assert count.value == pytest.approx(expected) and count.inferred_unit


def test_a_missing_unit_that_fits_no_scale_is_reported(f, read):
    counts = read(f.count("platelets", 5, unit=None, id="p5"))
    assert counts.by_analyte == {}
    assert counts.problems == ("Platelets Observation/p5: no unit, and 5 fits no known scale",)


def test_an_unknown_unit_is_reported(f, read):
    counts = read(f.count("platelets", 45, unit="%", id="p45"))
    assert counts.by_analyte == {}
    assert counts.problems == ("Platelets Observation/p45: unit '%' is not recognised",)


@pytest.mark.parametrize("low, expected", [
    ({"value": 130, "unit": "10*3/uL"}, 130),
    ({"value": 130_000, "unit": "/uL"}, 130),       # the limit's own unit
    ({"value": 130}, 130),                          # no unit: the value's
])
def test_the_labs_lower_limit_is_normalised(f, read, low, expected):
    count = f.count("platelets", 140)
    count["referenceRange"] = [{"text": "adult"}, {"low": low}]
    assert read(count).by_analyte["platelets"][0].lower_limit == pytest.approx(expected)
    assert read(f.count("platelets", 140)).by_analyte["platelets"][0].lower_limit is None


# ---- which counts, and which two are kept ---------------------------------------------------

def test_every_code_of_an_analyte_is_read_and_only_in_loinc(knowledge, f, read):
    for name, analyte in knowledge.labs.analytes.items():
        for index in range(len(analyte.codes)):
            assert values(read(f.count(name, 4, code_index=index)), name) == [4], (name, index)
    other = f.count("platelets", 40)
    other["code"]["coding"][0]["system"] = "http://example.org/fhir/local-codes"
    assert read(other).by_analyte == {}
    del other["code"]["coding"][0]["system"]             # no system: read as the LOINC code
    assert values(read(other), "platelets") == [40]


def test_the_latest_count_is_read(f, read):
    latest = f.count("platelets", 150, days_ago=1, id="b")
    counts = read(f.count("platelets", 160, days_ago=30, id="a"), latest,
                  f.count("platelets", 155, days_ago=14, id="c"))
    (count,) = counts.by_analyte["platelets"]
    assert (count.value, count.resource) == (150, "Observation/b")
    assert count.when == counts.latest == taken(latest)


@pytest.mark.parametrize("history, kept", [
    ([300, 200], [200, 300]),          # a 33% fall: the peak is kept
    ([320, 240], [240, 320]),          # exactly 25%: kept
    ([300, 240], [240]),               # 20%: no falling trend, no peak
    ([200, 300], [300]),               # rising
    ([250, 310, 280, 200], [200, 310]),  # the highest earlier count, not the last one
])
def test_the_earlier_peak_is_kept_only_when_it_can_make_a_fall(f, read, history, kept):
    days = range(14 + 10 * (len(history) - 1), 13, -10)      # oldest first, latest 14 days ago
    counts = read(*(f.count("platelets", v, days_ago=d, id=f"p{d}")
                    for v, d in zip(history, days, strict=True)))
    assert values(counts, "platelets") == kept


def test_counts_outside_the_window_are_not_read(knowledge, f, read):
    days = knowledge.labs.lookback_days
    old = f.count("platelets", 300, days_ago=days + 1, id="old")
    counts = read(old, f.count("platelets", 200, id="recent"))
    assert values(counts, "platelets") == [200]                # the old peak makes no fall
    only_old = read(old)
    assert only_old.by_analyte == {} and only_old.problems == ()
    assert only_old.latest == taken(old)                       # but "the newest count" is known
    assert values(read(f.count("platelets", 40, days_ago=days - 1)), "platelets") == [40]


def test_a_count_from_the_future_is_not_read_but_a_clock_a_little_ahead_is(f, read):
    assert read(f.count("platelets", 40, effective=(NOW + timedelta(days=2)).isoformat())
                ).by_analyte == {}
    soon = read(f.count("platelets", 40, effective=(NOW + timedelta(hours=12)).isoformat()))
    assert values(soon, "platelets") == [40]


@pytest.mark.parametrize("status, counted", [
    ("final", True), ("amended", True), ("corrected", True), ("preliminary", True),
    ("registered", False), ("cancelled", False), ("entered-in-error", False), ("unknown", False),
])
def test_only_results_with_a_counted_status_are_read(f, read, status, counted):
    counts = read(f.count("platelets", 250, days_ago=30, id="earlier"),
                  f.count("platelets", 40, days_ago=1, status=status, id="latest"))
    assert values(counts, "platelets")[0] == (40 if counted else 250)
    assert counts.problems == ()


# ---- invalid elements: reported, and the next readable count used --------------------------

@pytest.mark.parametrize("change, problem", [
    (lambda o: o["valueQuantity"].update(value="pending"),
     "Platelets Observation/bad: valueQuantity.value is not a number"),
    (lambda o: o.update(valueQuantity=[40]),
     "Platelets Observation/bad: valueQuantity is not a Quantity"),
    (lambda o: o["valueQuantity"].update(unit=5, code=None),
     "Platelets Observation/bad: valueQuantity.unit is not a string"),
    (lambda o: o.pop("valueQuantity"), "Platelets Observation/bad has no numeric value"),
    (lambda o: o.update(referenceRange=[{"low": {"value": "150"}}]),
     "Platelets Observation/bad: referenceRange[0].low.value is not a number"),
    (lambda o: o.update(effectiveDateTime="yesterday"),
     "Observation/bad: effectiveDateTime is not a valid FHIR dateTime"),
    (lambda o: o.pop("effectiveDateTime"), "Observation/bad has no date"),
])
def test_an_invalid_count_is_reported_and_the_earlier_one_read(f, read, change, problem):
    bad = f.count("platelets", 40, days_ago=1, id="bad")
    change(bad)
    counts = read(f.count("platelets", 250, days_ago=30, id="earlier"), bad)
    assert values(counts, "platelets") == [250]
    assert counts.problems == (problem,)


def test_an_unreadable_peak_is_reported_and_the_next_highest_kept(f, read):
    unreadable = f.count("platelets", 400, days_ago=60, unit="%", id="pct")
    counts = read(unreadable, f.count("platelets", 300, days_ago=40, id="p300"),
                  f.count("platelets", 200, id="p200"))
    assert values(counts, "platelets") == [200, 300]
    assert counts.problems == ("Platelets Observation/pct: unit '%' is not recognised",)


def test_an_earlier_count_lower_than_the_latest_is_no_peak(f, read):
    """The highest earlier count is unreadable and the next one is below the latest: no fall."""
    counts = read(f.count("platelets", 400, days_ago=60, unit="%", id="pct"),
                  f.count("platelets", 150, days_ago=40, id="p150"),
                  f.count("platelets", 200, id="p200"))
    assert values(counts, "platelets") == [200]
    assert counts.problems == ("Platelets Observation/pct: unit '%' is not recognised",)


def test_completeness_is_passed_on(f, read):
    assert read(f.count("platelets", 250)).complete
    assert not read(f.count("platelets", 250), complete=False).complete


# ---- found by the mutation check (tools/mutation.sh) ---------------------------------

@pytest.mark.parametrize("value, expected", [
    (10, 10), (1000, 1000), (10_000, 10), (1_000_000, 1000),   # each scale holds its bounds
])
def test_an_inferred_unit_scale_holds_its_bounds(f, read, value, expected):
    (count,) = read(f.count("platelets", value, unit=None)).by_analyte["platelets"]
    assert count.value == pytest.approx(expected) and count.inferred_unit


@pytest.mark.parametrize("quantity", [
    {"value": 500, "unit": "cells per microlitre", "code": "/uL"},   # the code counts
    {"value": 500, "unit": "/uL"},                                   # else the unit
    {"value": 280_000, "unit": "/uL", "code": "/uL"},                # 280 < 300
])
def test_the_peak_is_chosen_by_the_value_in_its_own_unit(f, read, quantity):
    """500/uL (0.5) or 280,000/uL (280) beside 300 x10^9/L: the peak is 300."""
    other = f.count("platelets", 0, days_ago=40, id="other")
    other["valueQuantity"] = quantity
    counts = read(other, f.count("platelets", 300, days_ago=30, id="p300"),
                  f.count("platelets", 200, id="p200"))
    assert values(counts, "platelets") == [200, 300]


@pytest.mark.parametrize("quantity", [
    [500], {"value": "pending"}, {"value": 500, "code": 5},
])
def test_a_malformed_earlier_count_never_stops_the_reading(f, read, quantity):
    earlier = f.count("platelets", 0, days_ago=40, id="bad")
    earlier["valueQuantity"] = quantity
    counts = read(earlier, f.count("platelets", 300, days_ago=30), f.count("platelets", 200))
    assert values(counts, "platelets") == [200, 300]


@pytest.mark.parametrize("earlier", [
    {"value": "pending"},                     # unreadable: no value to rank it by
    {"value": 200_000, "unit": "%", "code": "%"},  # an unknown unit, and no scale fits
])
def test_an_earlier_count_that_cannot_be_ranked_is_not_read(f, read, earlier):
    """Only a count that could be the peak is read in full (and reported if unreadable)."""
    bad = f.count("neutrophils", 0, days_ago=40, id="bad")
    bad["valueQuantity"] = earlier
    counts = read(bad, f.count("neutrophils", 0.5))
    assert values(counts, "neutrophils") == [0.5] and counts.problems == ()


def percent(knowledge, f: Factory, value: object, *, id: str = "pct",  # noqa: A002
            days_ago: float = 14, unit: str | None = "%", status: str = "final") -> dict:
    """A neutrophil percentage (its first code in cards/labs.yaml)."""
    code = knowledge.labs.analytes["neutrophils"].from_percent.codes[0]
    obs = f.observation(id, f.loinc(code), when(days_ago), status=status)
    if value is not None:
        obs["valueQuantity"] = {"value": value, **({"unit": unit, "code": unit} if unit else {})}
    return obs


def leukocytes(f: Factory, value: float, *, id: str = "wbc", days_ago: float = 14,  # noqa: A002
               unit: str | None = "10*9/L") -> dict:
    return f.count("leukocytes", value, days_ago=days_ago, id=id, unit=unit)


def test_a_derived_count_names_both_results_and_keeps_their_status(knowledge, f, read):
    counts = read(percent(knowledge, f, 20, status="preliminary"), leukocytes(f, 4.0, unit=None))
    (count,) = counts.by_analyte["neutrophils"]
    assert count.value == pytest.approx(0.8) and count.derived
    assert count.resource == "Observation/pct x Observation/wbc"
    assert (count.status, count.inferred_unit) == ("preliminary", True)


@pytest.mark.parametrize("value, unit, expected", [
    (0, "%", [0]), (100, "%", [4.0]), (20, None, [0.8]),     # 0 and 100% hold; no unit: %
    (100.5, "%", []), (20, "10*9/L", []), (None, "%", []),   # out of range, other unit, none
])
def test_which_percentages_give_a_count(knowledge, f, read, value, unit, expected):
    counts = read(percent(knowledge, f, value, unit=unit), leukocytes(f, 4.0))
    assert values(counts, "neutrophils") == expected


def test_the_newest_percentage_with_a_whole_count_at_its_time(knowledge, f, read):
    older = [percent(knowledge, f, 40, id="old", days_ago=30), leukocytes(f, 5.0, id="w-old",
                                                                         days_ago=30)]
    assert values(read(*older, percent(knowledge, f, 20, id="new"), leukocytes(f, 4.0)),
                  "neutrophils") == [0.8]
    lone = percent(knowledge, f, 10, id="lone", days_ago=2)       # no leukocytes at its time
    assert values(read(*older, lone), "neutrophils") == [2.0]
    same_time = [percent(knowledge, f, 20, id="a"), percent(knowledge, f, 30, id="b")]
    assert values(read(*same_time, leukocytes(f, 4.0)), "neutrophils") == [0.8]


def test_an_unreadable_percentage_is_reported_and_an_older_one_used(knowledge, f, read):
    counts = read(percent(knowledge, f, 40, id="old", days_ago=30),
                  leukocytes(f, 5.0, id="w-old", days_ago=30),
                  percent(knowledge, f, "pending", id="new"), leukocytes(f, 4.0))
    assert values(counts, "neutrophils") == [2.0]
    assert counts.problems == ("Observation/new: valueQuantity.value is not a number",)


def test_no_count_from_a_percentage_without_a_readable_whole(knowledge, f, read):
    assert read(percent(knowledge, f, 20)).by_analyte == {}
    counts = read(percent(knowledge, f, 20), leukocytes(f, 4.0, unit="bogus/unit"))
    assert counts.by_analyte == {} and counts.problems
