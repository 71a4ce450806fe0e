"""Blood counts against critical thresholds, the lab's lower limit and a falling trend; in
chronic ITP low platelets are the indication, but a bleeding risk below the ITP thresholds and a
large fall from the peak are not."""

from __future__ import annotations

from ..facts.conditions import Conditions
from ..facts.counts import Count, Counts
from ..facts.orders import Order
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from ..knowledge.schema import INDICATORS
from . import THIOPURINE, Rule
from .evidence import CONDITION, condition_evidence

COUNT = frozenset({"analyte", "value", "date", "resource", "limit", "status"})
PEAK = frozenset({"analyte", "value", "date", "resource", "fall"})
UNREADABLE = frozenset({"analyte", "resources"})


def _fall(latest: Count, peak: Count) -> float:
    return (peak.value - latest.value) / peak.value


def _count_evidence(count: Count, limit: float, knowledge: Knowledge) -> list[Evidence]:
    kind = ("count-derived" if count.derived else
            "count-inferred-unit" if count.inferred_unit else "count")
    display = knowledge.labs.analytes[count.analyte].display
    lines = [Evidence(kind, {"analyte": display, "value": count.value, "date": count.when,
                             "resource": count.resource, "limit": limit,
                             "status": count.status})]
    if count.newer_unreadable:
        lines.append(Evidence("count-newer-unreadable", {"analyte": display,
                                                         "resources": count.newer_unreadable}))
    return lines


def _itp_verdict(counts: tuple[Count, ...], limit: float, knowledge: Knowledge) -> str | None:
    spec, latest = knowledge.labs.itp, counts[0]
    if latest.value < spec.severe_bleeding_below and not latest.inferred_unit:
        return "cytopenia-itp-severe-bleeding-risk"
    if latest.value < spec.bleeding_below:
        return "cytopenia-itp-bleeding-risk"
    if len(counts) > 1 and _fall(latest, counts[1]) >= spec.fall_fraction:
        return "cytopenia-itp-falling"
    return "cytopenia-itp" if latest.value < limit else None


def _verdict(counts: tuple[Count, ...], itp: bool, knowledge: Knowledge) -> str | None:
    latest = counts[0]
    analyte = knowledge.labs.analytes[latest.analyte]
    limit = latest.lower_limit or analyte.lower_limit
    if analyte.itp_sensitive and itp:
        return _itp_verdict(counts, limit, knowledge)
    critical = analyte.critical_below
    if critical is not None and latest.value < critical and not latest.inferred_unit:
        return "cytopenia-critical"  # an inferred unit never drives a stop
    if latest.value < limit:
        return "cytopenia-low"
    if len(counts) > 1 and _fall(latest, counts[1]) >= knowledge.labs.trend_fall_fraction:
        return "cytopenia-falling"
    return None


def _kind(key: str) -> str:
    """Which counts a card names together: out of range, falling, or ITP platelets."""
    return "itp" if "-itp" in key else "falling" if key.endswith("falling") else "low"


def _shown(count: Count, knowledge: Knowledge) -> str:
    """A count for the summary; dated when a newer one could not be read."""
    text = f"{knowledge.labs.analytes[count.analyte].display.lower()} {count.value:g}"
    return f"{text} (on {count.when:%Y-%m-%d})" if count.newer_unreadable else text


def cytopenia(order: Order, knowledge: Knowledge, *, counts: Counts,
              conditions: Conditions) -> list[Finding]:
    if not counts.complete and not counts.by_analyte:
        return []  # the counts could not be had: data-unavailable says so
    drug = knowledge.drugs[order.drug].display
    days = knowledge.labs.lookback_days
    itp = conditions.for_order(order).get("itp")
    verdicts, evidence = [], []
    for name, analyte in knowledge.labs.analytes.items():
        mine = counts.by_analyte.get(name)
        if not mine:
            evidence.append(Evidence("no-count", {"analyte": analyte.display, "days": days}))
            continue
        evidence += _count_evidence(mine[0], mine[0].lower_limit or analyte.lower_limit,
                                    knowledge)
        if len(mine) > 1:
            peak = mine[1]
            evidence.append(Evidence("count-peak", {
                "analyte": analyte.display, "value": peak.value, "date": peak.when,
                "resource": peak.resource, "fall": round(100 * _fall(mine[0], peak))}))
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
    severity = {k: INDICATORS.index(f.indicator) for k, f in knowledge.cards.findings.items()}
    verdicts.sort(key=lambda v: severity[v[0]], reverse=True)
    key, mine = verdicts[0]
    if "malignancy" in conditions.for_order(order):
        # Cancer therapy: counts are steered by the protocol, not read as drug toxicity.
        key, verdicts = "cytopenia-protocol", [("cytopenia-protocol", m) for _, m in verdicts]
    latest = mine[0]
    values = {"drug": drug, "analyte": knowledge.labs.analytes[latest.analyte].display,
              "value": latest.value, "days": max(1, (latest.when - mine[-1].when).days),
              "fall": round(100 * _fall(latest, mine[1])) if len(mine) > 1 else 0,
              "counts": tuple(_shown(m[0], knowledge) for k, m in verdicts
                              if _kind(k) == _kind(key))}
    return [Finding(key, order, values, tuple(evidence))]


RULE = Rule(
    name="cytopenia", evaluate=cytopenia, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "analyte", "value", "fall", "days", "counts"}),
    findings=("cytopenia-critical", "cytopenia-low", "cytopenia-falling", "cytopenia-itp",
              "cytopenia-itp-bleeding-risk", "cytopenia-itp-severe-bleeding-risk",
              "cytopenia-itp-falling", "cytopenia-protocol", "cytopenia-no-recent"),
    evidence={"count": COUNT, "count-inferred-unit": COUNT, "count-derived": COUNT,
              "count-peak": PEAK, "count-newer-unreadable": UNREADABLE,
              "no-count": frozenset({"analyte", "days"}), **CONDITION},
)
