"""The interactions rule (cds_service/rules/interactions.py): each finding names the other order,
so that evidence and any remove-the-other-order suggestion in cards/ point at the right one."""

from __future__ import annotations

import pytest

from ..test_cases import evaluate


@pytest.mark.parametrize("given, order, partner", [
    ({"medications": [{"drug": "co-trimoxazole", "tablets": 1}]},
     "MedicationRequest/draft-azathioprine", "MedicationRequest/active-co-trimoxazole"),
    ({"drafts": [{"drug": "co-trimoxazole", "tablets": 1}],
      "medications": [{"drug": "azathioprine", "authored": "2026-03-02"}]},
     "MedicationRequest/draft-co-trimoxazole", "MedicationRequest/active-azathioprine"),
])
def test_an_interaction_names_its_partner(knowledge, given, order, partner):
    findings, _ = evaluate({"given": given}, knowledge)
    (finding,) = findings
    assert (finding.key, finding.order.ref, finding.partner.ref) == (
        "drug-interaction-warning", order, partner)
