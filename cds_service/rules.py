"""The clinical rules: facts in, findings out. Thresholds and wording come from cards/.

One function per rule family; each returns at most one finding per judged order, so a response
has one card per problem per drug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .facts import CHECK_MEDS, CHECK_ORDER, CHECK_PGX, Facts, Order
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
    return [Finding(key, order, params, evidence)]


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
        return _xo_findings(order, order, partners, knowledge)
    findings = []
    for other in facts.orders:
        if (other is not order and not other.judged and _is(other, THIOPURINE, knowledge)
                and knowledge.drugs[other.drug].xo_substrate):
            findings += _xo_findings(order, other, [order], knowledge)
    return findings[:1]


def _xo_findings(order: Order, thiopurine: Order, inhibitors: list[Order],
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
    return [Finding(f"xo-{inhibitor.drug}", order, params, evidence, target=thiopurine)]


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


ORDER_RULES = (pgx, untested, xanthine_oxidase, cytopenia)


def evaluate(facts: Facts, knowledge: Knowledge) -> list[Finding]:
    findings = []
    for order in facts.judged():
        thiopurine = _is(order, THIOPURINE, knowledge)
        for rule in ORDER_RULES:
            if thiopurine or rule is xanthine_oxidase:
                findings += rule(order, facts, knowledge)
    return findings + data_unavailable(facts, knowledge)
