"""Patient-view: blood counts overdue against the label's schedule for an active thiopurine."""

from __future__ import annotations

from datetime import datetime

from ..facts.counts import Counts
from ..facts.orders import Order
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule


def monitoring(order: Order, knowledge: Knowledge, *, counts: Counts, now: datetime,
               courses: dict[str, Order]) -> list[Finding]:
    """Counted from the start of the course at the current dose, not from the last renewal."""
    course = courses.get(order.ref, order)
    start = course.start
    if order.draft or start is None or not counts.complete:
        return []
    spec = knowledge.labs.monitoring
    day = (now - start).days
    step = next(s for s in spec.schedule if s.until_day is None or day <= s.until_day)
    last = counts.latest if counts.latest and counts.latest >= start else None
    if last is not None and (now - last).days <= step.every_days + spec.grace_days:
        return []
    values = {"drug": knowledge.drugs[order.drug].display, "every": step.every_days,
              "phase": step.phase, "last": last}
    evidence = [Evidence("therapy-start", {"resource": course.ref, "date": start, "day": day})]
    if counts.latest:
        evidence.append(Evidence("last-count", {"date": counts.latest}))
    return [Finding("monitoring-overdue" if last else "monitoring-none-since-start", order,
                    values, tuple(evidence))]


RULE = Rule(
    name="monitoring", evaluate=monitoring, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "every", "phase", "last"}),
    findings=("monitoring-overdue", "monitoring-none-since-start"),
    evidence={"therapy-start": frozenset({"resource", "date", "day"}),
              "last-count": frozenset({"date"})},
)
