"""Evidence lines several rules cite: an order, and where a condition was found."""

from __future__ import annotations

from ..facts.conditions import Mention
from ..facts.orders import Order
from ..findings import Evidence
from ..knowledge import Knowledge

ORDER = {"order": frozenset({"drug", "resource", "status"})}
CONDITION = {f"condition-{via}": frozenset({"condition", "resource", "date"})
             for via in ("condition", "reason", "status")}


def order_evidence(order: Order, knowledge: Knowledge) -> Evidence:
    status = "draft" if order.draft else str(order.resource.get("status") or "active")
    return Evidence("order", {"drug": knowledge.drugs[order.drug].display,
                              "resource": order.ref, "status": status})


def condition_evidence(name: str, mention: Mention, knowledge: Knowledge) -> Evidence:
    return Evidence(f"condition-{mention.via}", {
        "condition": knowledge.conditions[name].display, "resource": mention.resource,
        "date": mention.when})
