"""Xanthine-oxidase inhibitors with azathioprine or mercaptopurine, from either side."""

from __future__ import annotations

from ..facts.orders import Order, Orders
from ..findings import Finding
from ..knowledge import Knowledge
from . import THIOPURINE, XO_INHIBITOR, Rule
from .dose import SENSED
from .evidence import ORDER, order_evidence


def _substrate(order: Order, knowledge: Knowledge) -> bool:
    return order.drug_class == THIOPURINE and knowledge.drugs[order.drug].xanthine_oxidase_substrate


def _inhibitor(thiopurine: Order, orders: Orders, knowledge: Knowledge) -> Order | None:
    """The xanthine-oxidase inhibitor that raises this thiopurine's levels, febuxostat
    (contraindicated) before allopurinol (dose cut)."""
    if not _substrate(thiopurine, knowledge):
        return None
    return orders.first("febuxostat") or orders.first(XO_INHIBITOR)


def inhibitor_finding(thiopurine: Order, orders: Orders, knowledge: Knowledge) -> str | None:
    inhibitor = _inhibitor(thiopurine, orders, knowledge)
    return f"xo-{inhibitor.drug}" if inhibitor else None


def xanthine_oxidase(order: Order, knowledge: Knowledge, *, orders: Orders) -> list[Finding]:
    if order.drug_class == THIOPURINE:
        inhibitor, thiopurine = _inhibitor(order, orders, knowledge), order
    else:
        inhibitor = order
        thiopurine = next((o for drug, spec in knowledge.drugs.items()
                           if spec.xanthine_oxidase_substrate
                           and (o := orders.first(drug, "unjudged"))), None)
    if inhibitor is None or thiopurine is None:
        return []
    values = {"drug": knowledge.drugs[order.drug].display,
              "thiopurine": knowledge.drugs[thiopurine.drug].display}
    evidence = (order_evidence(inhibitor, knowledge), order_evidence(thiopurine, knowledge))
    partner = inhibitor if order is thiopurine else thiopurine
    return [Finding(f"xo-{inhibitor.drug}", order, values, evidence, target=thiopurine,
                    partner=partner)]


RULE = Rule(
    name="xanthine-oxidase", evaluate=xanthine_oxidase,
    applies_to=frozenset({THIOPURINE, XO_INHIBITOR}),
    values=frozenset({"drug", "thiopurine"}) | SENSED,
    findings=("xo-allopurinol", "xo-allopurinol-reduced", "xo-febuxostat"),
    evidence=ORDER,
)
