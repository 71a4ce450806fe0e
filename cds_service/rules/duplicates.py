"""Two thiopurines at once: a thiopurine ordered while another order of a thiopurine (the same
or another: azathioprine is a prodrug of mercaptopurine) is active or drafted alongside."""

from __future__ import annotations

from ..facts.orders import Order, Orders
from ..findings import Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule
from .evidence import ORDER, order_evidence


def _renews(order: Order, other: Order) -> bool:
    """The order renews or replaces the other (priorPrescription), or both are drafts of one
    drug, as when two strengths make one dose."""
    prior = order.resource.get("priorPrescription")
    if isinstance(prior, dict) and prior.get("reference") == other.ref:
        return True
    return order.draft and other.draft and order.drug == other.drug


def duplicates(order: Order, knowledge: Knowledge, *, orders: Orders) -> list[Finding]:
    # an active (or unselected) thiopurine; else the first judged one, so that a pair of judged
    # drafts gets one card, on the later of the two
    other = orders.first(THIOPURINE, "unjudged") or orders.first(THIOPURINE)
    if other is None or other is order or _renews(order, other):
        return []
    values = {"drug": knowledge.drugs[order.drug].display,
              "other": knowledge.drugs[other.drug].display}
    return [Finding("duplicate-thiopurine", order, values, (order_evidence(other, knowledge),),
                    partner=other)]


RULE = Rule(
    name="duplicates", evaluate=duplicates, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "other"}), findings=("duplicate-thiopurine",), evidence=ORDER,
)
