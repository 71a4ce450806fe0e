"""Liver enzymes (cds_service/facts/measurements.py): the latest readable ALT/AST with the lab's
upper limit and flags. Codes come from cards/labs.yaml through the factories."""

from __future__ import annotations

import pytest

from cds_service.facts.measurements import read_liver

from ..factories import NOW, Factory


@pytest.fixture
def read(knowledge):
    def read(*observations: dict):
        problems: list[str] = []
        return read_liver(tuple(observations), knowledge, NOW, problems), problems
    return read


def test_a_liver_result_with_its_unit_limit_and_flags(knowledge, read):
    alt = Factory(knowledge).liver("ALT", 121, high=40, flag="HH")
    (result,), problems = read(alt)
    assert problems == []
    assert (result.name, result.value, result.unit, result.upper_limit) == ("ALT", 121, "U/L", 40)
    assert (result.resource, result.flags) == ("Observation/alt-14", frozenset({"HH"}))
    (bare,), _ = read(Factory(knowledge).liver("AST", 30))
    assert bare.upper_limit is None and bare.flags == frozenset()


def test_the_upper_limit_is_the_first_range_that_has_one(knowledge, read):
    alt = Factory(knowledge).liver("ALT", 121)
    alt["referenceRange"] = ["junk", {"low": {"value": 7, "unit": "U/L"}},
                             {"high": {"value": 40, "unit": "U/L"}},
                             {"high": {"value": 56, "unit": "U/L"}}]
    (result,), problems = read(alt)
    assert (result.upper_limit, problems) == (40, [])


def test_an_unreadable_limit_or_value_is_reported(knowledge, read):
    f = Factory(knowledge)
    alt = f.liver("ALT", 121)
    alt["referenceRange"] = [{"high": {"value": "40", "unit": "U/L"}}]
    (result,), problems = read(alt)
    assert result.upper_limit is None
    assert problems == ["Observation/alt-14: referenceRange[0].high.value is not a number"]
    assert read(f.liver("AST", "high")) == ((), [
        "Observation/ast-14: valueQuantity.value is not a number"])


def test_a_result_without_a_date_is_reported_not_skipped(knowledge, read):
    alt = Factory(knowledge).liver("ALT", 121, high=40)
    del alt["effectiveDateTime"]
    assert read(alt) == ((), ["Observation/alt-14 has no date"])
