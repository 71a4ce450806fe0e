"""One way through: validated request -> prefetch resolution -> facts -> rules -> cards."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime

from . import cards, prefetch, rules
from .config import Settings
from .errors import CDSError
from .facts import CHECK_MEDS, CHECK_ORDER, Facts, Order, gather, make_order, medication_index
from .fhir_read import validate
from .knowledge import Knowledge
from .medications import external_reference
from .protocol import HookRequest

_ORDER_TYPES = ("MedicationRequest", "MedicationOrder")


@dataclass(frozen=True)
class Result:
    cards: list[dict]
    findings: list[rules.Finding]


def _drafts(request: HookRequest, medications: dict[str, dict],
            knowledge: Knowledge) -> list[Order]:
    drafts = []
    for resource in request.orders:
        if resource.get("resourceType") not in _ORDER_TYPES:
            continue  # other request types (ServiceRequest, NutritionOrder...) are context only
        order = make_order(resource, False, True, medications, knowledge)
        judged = request.selections is None or order.ref in request.selections
        drafts.append(replace(order, judged=judged))
    return drafts


def _readable(order: Order, facts: Facts, knowledge: Knowledge) -> Order:
    """A judged draft that fails validation is not judged; the response says so."""
    if not order.judged:
        return order
    if order.drug is None:
        if external_reference(order.resource):
            facts.missing(CHECK_ORDER, f"{order.ref}: its Medication could not be read")
        return order
    resource, error = validate(order.resource, facts.version)
    if error:
        name = knowledge.drugs[order.drug].display
        facts.missing(CHECK_ORDER, f"{order.ref} ({name}) could not be read ({error}); "
                                   "no checks were done for it")
        return replace(order, judged=False)
    return replace(order, resource=resource)


def _needs_checks(request: HookRequest, drafts: list[Order]) -> bool:
    if request.hook == "patient-view":
        return True  # the active thiopurines are in the prefetch
    return any(o.judged and (o.drug or external_reference(o.resource)) for o in drafts)


def evaluate(request: HookRequest, knowledge: Knowledge, settings: Settings,
             now: datetime) -> Result:
    deadline = time.monotonic() + settings.time_budget_ms / 1000
    drafts = _drafts(request, {}, knowledge)
    if not _needs_checks(request, drafts):
        return Result([], [])  # nothing this service judges: no data fetched
    client = prefetch.connect(request, settings, deadline)  # one per call: its caps span all
    data = prefetch.resolve(request, client)
    known = medication_index(data, {})
    wanted = {ref for r in [*request.orders, *data["medications"].resources]
              if (ref := external_reference(r)) and ref not in known}
    fetched = prefetch.fetch_medications(client, wanted)
    medications = medication_index(data, fetched)
    facts = Facts(now=now, version=request.fhir_version, orders=[])
    for ref, item in fetched.items():
        if item.status != prefetch.OK:
            facts.missing(CHECK_MEDS, f"{ref}: {item.problem or 'not found'}")
    # Only drafts naming a Medication elsewhere can read differently now that it is fetched.
    drafts = [make_order(o.resource, o.judged, True, medications, knowledge)
              if external_reference(o.resource) else o for o in drafts]
    facts.orders = [_readable(o, facts, knowledge) for o in drafts]
    gather(facts, data, medications, knowledge, judge_active=request.hook == "patient-view")
    findings = rules.evaluate(facts, knowledge, request.service.rules)
    missing = [f for f in findings if f.key == "data-unavailable"]
    if settings.strict_412 and missing:  # the spec's answer when required data cannot be had
        raise CDSError(412, "required data could not be obtained: " + missing[0].params["checks"],
                       code="incomplete")
    return Result([cards.render(f, knowledge, request.patient_id) for f in findings], findings)


def failure_card(knowledge: Knowledge) -> dict:
    """What a hook call answers if the service itself fails: never an empty, safe-looking list."""
    finding = rules.Finding("data-unavailable", None, {"checks": "all checks"}, (
        "An internal error in the CDS service stopped the evaluation; it has been logged.",))
    return cards.render(finding, knowledge, "unknown")
