"""The clinical rules: facts in, findings out. Thresholds and wording come from cards/.

One function per rule family; each returns at most one finding per judged order, so a response
has one card per problem per drug.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from .facts import CHECK_MEDS, CHECK_ORDER, CHECK_PGX, Facts, Order
from .fhir_read import as_list, concept_texts, parse_time
from .knowledge import INDICATORS, Knowledge
from .labs import Count

THIOPURINE, XO_INHIBITOR = "thiopurine", "xanthine-oxidase-inhibitor"
_IM = ("intermediate", "possible_intermediate")


@dataclass(frozen=True)
class Finding:
    key: str                         # a finding in cards/rules.yaml
    order: Order | None              # the order the card is about
    params: dict[str, str] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    target: Order | None = None      # the order a dose suggestion changes, if not `order`


def _drug(order: Order, knowledge: Knowledge) -> str:
    return knowledge.drugs[order.drug].display


def _is(order: Order, drug_class: str, knowledge: Knowledge) -> bool:
    return order.drug is not None and knowledge.drugs[order.drug].drug_class == drug_class


def mg_kg_day(order: Order | None, facts: Facts) -> float | None:
    if order is None or order.dose is None or facts.weight is None or facts.weight.value <= 0:
        return None
    per_day = order.dose.mg_per_day
    return None if per_day is None else per_day / facts.weight.value


def _maybe_reduced(finding: Finding, facts: Facts, knowledge: Knowledge) -> Finding:
    """A dose already inside the reduced range gets the finding's quieter variant."""
    reduced = knowledge.rules["findings"][finding.key].get("if_reduced")
    order = finding.target or finding.order
    dose = mg_kg_day(order, facts)
    normal = knowledge.drugs[order.drug].normal_mg_kg_day if order and order.drug else None
    if not reduced or dose is None or not normal or dose > reduced["max_fraction"] * normal:
        return finding
    evidence = (*finding.evidence, f"Ordered dose {dose:.2f} mg/kg/day ({facts.weight.value:g} kg,"
                f" {facts.weight.resource}); normal start up to {normal:g} mg/kg/day.")
    return replace(finding, key=reduced["finding"], evidence=evidence,
                   params={**finding.params, "dose_kg": f"{dose:.2f}"})


def pgx(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    results = {g: r for g, r in facts.pgx.items() if r.phenotype != "unknown"}
    evidence = tuple(r.evidence for r in results.values())
    by = {p: [g for g, r in results.items() if r.phenotype in p] for p in (("poor",), _IM)}
    params = {"drug": _drug(order, knowledge)}
    if by[("poor",)]:
        key, params["gene"] = "pgx-poor", " and ".join(by[("poor",)])
    elif len(by[_IM]) == 2:
        key = "pgx-both-intermediate"
    elif by[_IM]:
        key, params["gene"] = "pgx-intermediate", by[_IM][0]
    elif results.get("TPMT") and results["TPMT"].phenotype == "indeterminate":
        key = "pgx-tpmt-indeterminate"
    elif results.get("NUDT15") and results["NUDT15"].phenotype == "indeterminate":
        key = "pgx-nudt15-indeterminate"
    else:
        return []
    return [_maybe_reduced(Finding(key, order, params, evidence), facts, knowledge)]


def untested(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    if CHECK_PGX in facts.unavailable:  # a result may exist: say so, don't claim "untested"
        return []
    missing = [g for g in ("TPMT", "NUDT15") if g not in facts.pgx]
    params = {"drug": _drug(order, knowledge), "genes": " and ".join(missing)}
    if "TPMT" in missing:
        established = any(not o.draft and o.drug == order.drug for o in facts.orders)
        key = "untested-established" if established else "untested-new-start"
    elif missing:
        key = "untested-nudt15"
    else:
        return []
    return [Finding(key, order, params, (f"No {params['genes']} result on file.",))]


def xanthine_oxidase(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    if _is(order, THIOPURINE, knowledge):
        if not knowledge.drugs[order.drug].xo_substrate:
            return []
        partners = [o for o in facts.orders if o is not order and _is(o, XO_INHIBITOR, knowledge)]
        return _xo_findings(order, order, partners, facts, knowledge)
    if not _is(order, XO_INHIBITOR, knowledge):
        return []
    findings = []
    for other in facts.orders:
        if (other is not order and not other.judged and _is(other, THIOPURINE, knowledge)
                and knowledge.drugs[other.drug].xo_substrate):
            findings += _xo_findings(order, other, [order], facts, knowledge)
    return findings[:1]


def _xo_findings(order: Order, thiopurine: Order, inhibitors: list[Order], facts: Facts,
                 knowledge: Knowledge) -> list[Finding]:
    worst = sorted(inhibitors, key=lambda o: o.drug != "febuxostat")  # febuxostat first
    if not worst:
        return []
    inhibitor = worst[0]
    status = "ordered now" if inhibitor.draft else "active"
    evidence = (f"{_drug(inhibitor, knowledge).capitalize()} {status}: {inhibitor.ref}.",
                f"{_drug(thiopurine, knowledge).capitalize()}: {thiopurine.ref}"
                f"{' (active)' if not thiopurine.draft else ''}.")
    params = {"drug": _drug(order, knowledge), "thiopurine": _drug(thiopurine, knowledge)}
    finding = Finding(f"xo-{inhibitor.drug}", order, params, evidence, target=thiopurine)
    return [_maybe_reduced(finding, facts, knowledge)]


def _judge_count(counts: list[Count], analyte, facts: Facts,
                 knowledge: Knowledge) -> tuple[str | None, str]:
    latest = counts[0]
    limit = latest.lower_limit or analyte.lower_limit
    text = (f"{analyte.display} {latest.value:g} x10^9/L on {latest.when:%Y-%m-%d} "
            f"({latest.resource}; lower limit {limit:g}"
            f"{', unit inferred from magnitude' if latest.inferred_unit else ''})")
    if latest.value < limit and analyte.itp_sensitive and facts.itp:
        return "cytopenia-itp", text
    critical = analyte.critical_below
    if critical is not None and latest.value < critical and not latest.inferred_unit:
        return "cytopenia-critical", text
    if latest.value < limit:
        return "cytopenia-low", text
    peak = max(counts, key=lambda c: c.value)
    if peak.value > 0 and (peak.value - latest.value) / peak.value >= knowledge.trend_fall:
        fall = round(100 * (peak.value - latest.value) / peak.value)
        peak_text = f"{peak.value:g} on {peak.when:%Y-%m-%d}"
        return "cytopenia-falling", f"{text}; down {fall}% from {peak_text}"
    return None, text


def cytopenia(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    if "bloodCounts" in facts.failed:
        return []
    drug = _drug(order, knowledge)
    days = str(knowledge.lookback_days)
    verdicts, evidence = [], []
    for name, analyte in knowledge.analytes.items():
        counts = facts.counts.by_analyte.get(name)
        if not counts:
            evidence.append(f"No {analyte.display.lower()} count in the last {days} days.")
            continue
        key, text = _judge_count(counts, analyte, facts, knowledge)
        evidence.append(text + ".")
        if key:
            verdicts.append((key, analyte.display, counts))
    if facts.itp:
        evidence.append(f"Chronic ITP on record: {facts.itp}.")
    if not facts.counts.by_analyte:
        if not order.draft:  # on patient-view the monitoring rule says it, with the schedule
            return []
        return [Finding("cytopenia-no-recent", order, {"drug": drug, "days": days},
                        tuple(evidence))]
    if not verdicts:
        return []
    findings = knowledge.rules["findings"]
    key, display, counts = max(verdicts, key=lambda v: INDICATORS.index(
        findings[v[0]]["indicator"]))
    peak = max(counts, key=lambda c: c.value)
    params = {"drug": drug, "analyte": display, "value": f"{counts[0].value:g}",
              "fall": str(round(100 * (peak.value - counts[0].value) / peak.value)) if peak.value
              else "0", "days": str(max(1, (counts[0].when - peak.when).days))}
    return [Finding(key, order, params, tuple(evidence))]


def data_unavailable(facts: Facts, knowledge: Knowledge) -> list[Finding]:
    judged = facts.judged()
    if not facts.unavailable or not (judged or CHECK_ORDER in facts.unavailable):
        return []
    thiopurine = any(_is(o, THIOPURINE, knowledge) for o in judged)
    checks = [c for c in facts.unavailable
              if thiopurine or c in (CHECK_MEDS, CHECK_ORDER)]
    if not checks:
        return []
    evidence = tuple(f"{check}: {reason}" for check in checks
                     for reason in facts.unavailable[check])
    return [Finding("data-unavailable", None, {"checks": ", ".join(checks)}, evidence)]


def dose(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    """Above the indication's labelled mg/kg/day range (drugs with ranges in cards/)."""
    ranges = knowledge.drugs[order.drug].dose_ranges
    per_kg = mg_kg_day(order, facts)
    if not ranges or per_kg is None:
        return []
    texts = " ".join([facts.condition_texts, *(t.lower() for t in concept_texts(
        order.resource.get("reasonCode")))])
    new_start = not any(not o.draft and o.drug == order.drug for o in facts.orders)
    spec = next((r for r in ranges.values() if any(w in texts for w in r["words"]) and (
        new_start or not r.get("new_start_only"))), ranges["default"])
    low, high = spec["range"]
    if per_kg <= high:
        return []
    params = {"drug": _drug(order, knowledge), "dose_kg": f"{per_kg:.2f}", "low": f"{low:g}",
              "high": f"{high:g}", "indication": spec["label"],
              "dose_day": f"{order.dose.mg_per_day:g}", "weight": f"{facts.weight.value:g}",
              "fraction": str(high / per_kg)}
    evidence = (f"Ordered {order.dose.mg_per_day:g} mg/day; body weight {facts.weight.value:g} kg"
                f" on {facts.weight.when:%Y-%m-%d} ({facts.weight.resource}).",)
    return [Finding("dose-above-range", order, params, evidence)]


def _therapy_start(order: Order) -> datetime | None:
    for dosage in as_list(order.resource.get("dosageInstruction")):
        bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") if (
            isinstance(dosage, dict) and isinstance(dosage.get("timing"), dict)) else None
        if isinstance(bounds, dict) and parse_time(bounds.get("start")):
            return parse_time(bounds.get("start"))
    return parse_time(order.resource.get("authoredOn") or order.resource.get("dateWritten"))


def monitoring(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    """Blood counts overdue against the label's schedule (active orders only)."""
    start = _therapy_start(order)
    if order.draft or start is None or "bloodCounts" in facts.failed:
        return []
    spec = knowledge.monitoring
    day = (facts.now - start).days
    step = next(s for s in spec["schedule"] if day <= s.get("until_day", day))
    last = facts.counts.latest
    if last is not None and last >= start and (
            facts.now - last).days <= step["every_days"] + spec["grace_days"]:
        return []
    seen = f"{last:%Y-%m-%d}" if last and last >= start else "none since the start"
    params = {"drug": _drug(order, knowledge), "last": seen,
              "every": str(step["every_days"]), "phase": step["phase"]}
    evidence = (f"{order.ref} started or last changed {start:%Y-%m-%d} (day {day}).",
                f"Latest blood count: {f'{last:%Y-%m-%d}' if last else 'none on record'}.")
    return [Finding("monitoring-overdue", order, params, evidence)]


def hepatotoxicity(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    spec = knowledge.liver
    worst = None
    for result in facts.liver:
        ratio = result.value / result.upper_limit if result.upper_limit else None
        flagged = ratio is None and result.flags & set(spec["critical_flags"])
        raised = (ratio is not None and ratio > spec["uln_multiple"]) or flagged
        if raised and (worst is None or (ratio or 0) > (worst[1] or 0)):
            worst = (result, ratio)
    if worst is None:
        return []
    result, ratio = worst
    times = f"{ratio:.1f}x" if ratio else "flagged critical by the lab, above"
    params = {"drug": _drug(order, knowledge), "analyte": result.name,
              "value": f"{result.value:g}", "times": times}
    evidence = tuple(f"{r.name} {r.value:g} {r.unit} on {r.when:%Y-%m-%d} ({r.resource}; upper "
                     f"limit {r.upper_limit if r.upper_limit is not None else 'not given'})."
                     for r in facts.liver)
    return [Finding("hepatotoxicity", order, params, evidence)]


def interactions(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    """Label interactions: one card per interacting drug next to the thiopurine order."""
    findings, seen = [], set()
    for other in facts.orders:
        spec = knowledge.drugs[other.drug].interaction if other.drug else None
        if other is order or spec is None or other.drug in seen:
            continue
        seen.add(other.drug)
        status = "ordered now" if other.draft else other.resource.get("status", "active")
        params = {"drug": _drug(order, knowledge), "other": _drug(other, knowledge),
                  "effect": spec["effect"]}
        findings.append(Finding(spec["finding"], order, params, (f"{other.ref} ({status}).",)))
    return findings


def contraindications(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    """Hypersensitivity to azathioprine/mercaptopurine; rheumatoid arthritis after an
    alkylating agent (azathioprine)."""
    findings = []
    drug = _drug(order, knowledge)
    group = knowledge.drugs[order.drug].allergy_group
    allergic = [(d, ref) for d, ref in facts.allergies
                if group and knowledge.drugs[d].allergy_group == group]
    if allergic:
        allergen, ref = allergic[0]
        findings.append(Finding("hypersensitivity", order, {
            "drug": drug, "allergen": knowledge.drugs[allergen].display}, (f"{ref}.",)))
    if order.drug == "azathioprine" and facts.rheumatoid_arthritis and facts.alkylating:
        evidence = (f"Rheumatoid arthritis: {facts.rheumatoid_arthritis}.",
                    f"Alkylating agent: {facts.alkylating}.")
        findings.append(Finding("ra-alkylating", order,
                                {"drug": drug, "agent": "an alkylating agent"}, evidence))
    return findings


def pregnancy(order: Order, facts: Facts, knowledge: Knowledge) -> list[Finding]:
    drug = _drug(order, knowledge)
    findings = []
    if facts.pregnant:
        key = "pregnancy-ra" if facts.rheumatoid_arthritis else "pregnancy"
        evidence = [f"Pregnancy: {facts.pregnant}."]
        if facts.rheumatoid_arthritis:
            evidence.append(f"Rheumatoid arthritis: {facts.rheumatoid_arthritis}.")
        findings.append(Finding(key, order, {"drug": drug}, tuple(evidence)))
    if facts.breastfeeding:
        findings.append(Finding("breastfeeding", order, {"drug": drug},
                                (f"Breastfeeding: {facts.breastfeeding}.",)))
    return findings


RULES = {"pgx": pgx, "untested": untested, "xanthine-oxidase": xanthine_oxidase,
         "cytopenia": cytopenia, "dose": dose, "monitoring": monitoring,
         "hepatotoxicity": hepatotoxicity, "interactions": interactions,
         "contraindications": contraindications, "pregnancy": pregnancy}


def evaluate(facts: Facts, knowledge: Knowledge, names: tuple[str, ...]) -> list[Finding]:
    findings = []
    for order in facts.judged():
        thiopurine = _is(order, THIOPURINE, knowledge)
        for name in names:
            if thiopurine or name == "xanthine-oxidase":
                findings += RULES[name](order, facts, knowledge)
    return findings + data_unavailable(facts, knowledge)
