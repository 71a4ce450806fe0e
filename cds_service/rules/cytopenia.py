"""Blood counts against critical thresholds, the lab's lower limit and a falling trend; chronic
ITP, where low platelets are the indication."""

from __future__ import annotations

from ..facts.conditions import Conditions
from ..facts.counts import Count, Counts
from ..facts.orders import Order
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from ..knowledge.schema import INDICATORS
from . import THIOPURINE, Rule
from .evidence import CONDITION, condition_evidence

COUNT = frozenset({"analyte", "value", "date", "resource", "limit"})
PEAK = frozenset({"analyte", "value", "date", "resource", "fall"})


def _count_evidence(count: Count, limit: float, knowledge: Knowledge) -> Evidence:
    kind = "count-inferred-unit" if count.inferred_unit else "count"
    return Evidence(kind, {"analyte": knowledge.labs.analytes[count.analyte].display,
                           "value": count.value, "date": count.when,
                           "resource": count.resource, "limit": limit})


def _fall(latest: Count, peak: Count) -> int:
    return round(100 * (peak.value - latest.value) / peak.value)


def _verdict(counts: tuple[Count, ...], itp: bool, knowledge: Knowledge) -> str | None:
    latest = counts[0]
    analyte = knowledge.labs.analytes[latest.analyte]
    limit = latest.lower_limit or analyte.lower_limit
    if latest.value < limit and analyte.itp_sensitive and itp:
        return "cytopenia-itp"
    critical = analyte.critical_below
    if critical is not None and latest.value < critical and not latest.inferred_unit:
        return "cytopenia-critical"  # an inferred unit never drives a stop
    if latest.value < limit:
        return "cytopenia-low"
    if len(counts) > 1 and _fall(latest, counts[1]) >= 100 * knowledge.labs.trend_fall_fraction:
        return "cytopenia-falling"
    return None


def cytopenia(order: Order, knowledge: Knowledge, *, counts: Counts,
              conditions: Conditions) -> list[Finding]:
    if not counts.complete and not counts.by_analyte:
        return []  # the counts could not be had: data-unavailable says so
    drug = knowledge.drugs[order.drug].display
    days = knowledge.labs.lookback_days
    itp = conditions.get("itp")
    verdicts, evidence = [], []
    for name, analyte in knowledge.labs.analytes.items():
        mine = counts.by_analyte.get(name)
        if not mine:
            evidence.append(Evidence("no-count", {"analyte": analyte.display, "days": days}))
            continue
        evidence.append(_count_evidence(mine[0], mine[0].lower_limit or analyte.lower_limit,
                                        knowledge))
        if len(mine) > 1:
            peak = mine[1]
            evidence.append(Evidence("count-peak", {
                "analyte": analyte.display, "value": peak.value, "date": peak.when,
                "resource": peak.resource, "fall": _fall(mine[0], peak)}))
        key = _verdict(mine, itp is not None, knowledge)
        if key:
            verdicts.append((key, mine))
    if itp:
        evidence.append(condition_evidence("itp", itp, knowledge))
    if not counts.by_analyte:
        if not order.draft or not counts.complete:
            return []  # patient-view: the monitoring rule says it, with the schedule
        return [Finding("cytopenia-no-recent", order, {"drug": drug, "days": days},
                        tuple(evidence))]
    if not verdicts:
        return []
    findings = knowledge.cards.findings
    key, mine = max(verdicts, key=lambda v: INDICATORS.index(findings[v[0]].indicator))
    latest = mine[0]
    values = {"drug": drug, "analyte": knowledge.labs.analytes[latest.analyte].display,
              "value": latest.value, "fall": _fall(latest, mine[1]) if len(mine) > 1 else 0,
              "days": max(1, (latest.when - mine[-1].when).days)}
    return [Finding(key, order, values, tuple(evidence))]


RULE = Rule(
    name="cytopenia", evaluate=cytopenia, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "analyte", "value", "fall", "days"}),
    findings=("cytopenia-critical", "cytopenia-low", "cytopenia-falling", "cytopenia-itp",
              "cytopenia-no-recent"),
    evidence={"count": COUNT, "count-inferred-unit": COUNT, "count-peak": PEAK,
              "no-count": frozenset({"analyte", "days"}), **CONDITION},
)
