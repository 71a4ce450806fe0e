"""Xanthine-oxidase inhibitors with azathioprine or mercaptopurine, from either side."""

from __future__ import annotations

from ..facts.measurements import Measurement
from ..facts.orders import Order, Orders
from ..findings import Finding
from ..knowledge import Knowledge
from . import THIOPURINE, XO_INHIBITOR, Rule
from .dose import PER_KG, maybe_reduced
from .evidence import ORDER, order_evidence


def _substrate(order: Order, knowledge: Knowledge) -> bool:
    return order.drug_class == THIOPURINE and knowledge.drugs[order.drug].xanthine_oxidase_substrate


def xanthine_oxidase(order: Order, knowledge: Knowledge, *, orders: Orders,
                     weight: Measurement | None) -> list[Finding]:
    if order.drug_class == THIOPURINE:
        if not _substrate(order, knowledge):
            return []
        inhibitors = [o for o in orders.of_class(XO_INHIBITOR) if o is not order]
        # febuxostat (contraindicated) before allopurinol (dose cut)
        inhibitor = min(inhibitors, key=lambda o: o.drug != "febuxostat", default=None)
        thiopurine = order
    else:
        inhibitor = order
        thiopurine = next((o for o in orders.of_class(THIOPURINE)
                           if not o.judged and _substrate(o, knowledge)), None)
    if inhibitor is None or thiopurine is None:
        return []
    values = {"drug": knowledge.drugs[order.drug].display,
              "thiopurine": knowledge.drugs[thiopurine.drug].display}
    evidence = (order_evidence(inhibitor, knowledge), order_evidence(thiopurine, knowledge))
    finding = Finding(f"xo-{inhibitor.drug}", order, values, evidence, target=thiopurine)
    return [maybe_reduced(finding, weight, knowledge)]


RULE = Rule(
    name="xanthine-oxidase", evaluate=xanthine_oxidase,
    applies_to=frozenset({THIOPURINE, XO_INHIBITOR}),
    values=frozenset({"drug", "thiopurine", "dose_kg"}),
    findings=("xo-allopurinol", "xo-allopurinol-reduced", "xo-febuxostat"),
    evidence={**ORDER, "dose-per-kg": PER_KG},
)
