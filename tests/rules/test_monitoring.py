"""The monitoring rule (cds_service/rules/monitoring.py) called on facts directly."""

from __future__ import annotations

from datetime import timedelta

from cds_service.facts.counts import Counts
from cds_service.facts.orders import Dose, Order
from cds_service.rules.monitoring import monitoring

from ..factories import NOW

STARTED = NOW - timedelta(days=3)       # week 1: a count every 7 days


def order(*, draft: bool = False, start=STARTED) -> Order:
    return Order("MedicationRequest/aza", {"status": "draft" if draft else "active"},
                 "azathioprine", "thiopurine", Dose(3, "tablet", 50, 1), draft=draft,
                 judged=True, start=start)


def test_a_count_taken_at_the_start_counts(knowledge):
    on = order()
    found = monitoring(on, knowledge, counts=Counts(latest=STARTED), now=NOW,
                       courses={on.ref: on})
    assert found == []
    overdue = monitoring(on, knowledge, counts=Counts(latest=STARTED - timedelta(seconds=1)),
                         now=NOW, courses={on.ref: on})
    assert [f.key for f in overdue] == ["monitoring-none-since-start"]


def test_a_draft_is_not_monitored(knowledge):
    assert monitoring(order(draft=True), knowledge, counts=Counts(), now=NOW, courses={}) == []


def test_an_order_without_a_start_never_stops_the_rule(knowledge):
    undated = order(start=None)
    assert isinstance(monitoring(undated, knowledge, counts=Counts(), now=NOW,
                                 courses={undated.ref: undated}), list)
