"""Card building (cds_service/cards.py) on its own: the reduced dose's words and the null and
empty values a card never carries."""

from __future__ import annotations

from cds_service.cards import prune, reduce_dose
from cds_service.facts.orders import Dose


def test_a_reduced_dose_offers_every_value_a_template_may_use():
    new = reduce_dose(Dose(3, "tablet", 50, 1), 0.5, 25)
    assert new is not None and new.value == 1.5
    assert new.values() == {"dose": "1.5 tablets (75 mg)", "daily": "75 mg/day",
                            "current": "150 mg/day", "percent": 50,
                            "sig": "1.5 tablets (75 mg) once daily"}


def test_null_and_empty_values_are_pruned_at_every_depth():
    assert prune({"a": "", "b": [None, "", "x", {}, []], "c": {"d": [""]}, "e": 0, "f": False}) == {
        "b": ["x"], "e": 0, "f": False}
