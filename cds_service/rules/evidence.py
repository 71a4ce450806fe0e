"""Evidence lines several rules cite: an order, and where a condition was found."""

from __future__ import annotations

from ..facts.conditions import Mention
from ..facts.orders import Order
from ..findings import Evidence
from ..knowledge import Knowledge

ORDER = {"order": frozenset({"drug", "amount", "state", "resource"})}
CONDITION = {f"condition-{via}": frozenset({"condition", "resource", "date"})
             for via in ("condition", "reason", "status")}


def order_evidence(order: Order, knowledge: Knowledge) -> Evidence:
    """The order in a pharmacist's words (drug, daily dose, state), its id kept to trace it."""
    amount = order.dose.daily() if order.dose else "dose not stated"
    if order.draft:
        state = "the order being placed"
    else:
        state = str(order.resource.get("status") or "active")
        state += f" since {order.start:%Y-%m-%d}" if order.start else ""
    return Evidence("order", {"drug": knowledge.drugs[order.drug].display, "amount": amount,
                              "state": state, "resource": order.ref})


def condition_evidence(name: str, mention: Mention, knowledge: Knowledge) -> Evidence:
    return Evidence(f"condition-{mention.via}", {
        "condition": knowledge.conditions[name].display, "resource": mention.resource,
        "date": mention.when})
