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
    if order.draft or not counts.complete:
        return []
    if course.start is None:
        return _unknown_start(order, course, knowledge, counts, now)
    start, spec = course.start, knowledge.labs.monitoring
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


def _unknown_start(order: Order, course: Order, knowledge: Knowledge, counts: Counts,
                   now: datetime) -> list[Finding]:
    """No start date: beyond the longest interval the count is overdue whatever the phase;
    past the shortest it may be due, which an info card says rather than stay silent."""
    spec, last = knowledge.labs.monitoring, counts.latest
    age = None if last is None else (now - last).days
    shortest, longest = (min(s.every_days for s in spec.schedule) + spec.grace_days,
                         max(s.every_days for s in spec.schedule) + spec.grace_days)
    if age is not None and age <= shortest:
        return []
    key = ("monitoring-none-since-start" if last is None else "monitoring-overdue"
           if age > longest else "monitoring-start-unknown")
    values = {"drug": knowledge.drugs[order.drug].display, "every": longest - spec.grace_days,
              "phase": spec.unknown_start_phase, "last": last}
    evidence = [Evidence("therapy-start-unknown", {"resource": course.ref})]
    if last:
        evidence.append(Evidence("last-count", {"date": last}))
    return [Finding(key, order, values, tuple(evidence))]


RULE = Rule(
    name="monitoring", evaluate=monitoring, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "every", "phase", "last"}),
    findings=("monitoring-overdue", "monitoring-none-since-start", "monitoring-start-unknown"),
    evidence={"therapy-start": frozenset({"resource", "date", "day"}),
              "therapy-start-unknown": frozenset({"resource"}),
              "last-count": frozenset({"date"})},
)
