"""No TPMT / NUDT15 result on file: test before starting (CPIC pre-test alert)."""

from __future__ import annotations

from ..facts.orders import Order, Orders
from ..facts.pgx import PgxResults
from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import THIOPURINE, Rule


def untested(order: Order, knowledge: Knowledge, *, pgx: PgxResults,
             orders: Orders) -> list[Finding]:
    if not pgx.complete:  # a result may exist: say so (data-unavailable), don't claim "untested"
        return []
    missing = tuple(g for g in knowledge.pgx.genes if g not in pgx.by_gene)
    if "TPMT" in missing:
        key = "untested-established" if orders.established(order.drug) else "untested-new-start"
    elif missing:
        key = "untested-nudt15"
    else:
        return []
    values = {"drug": knowledge.drugs[order.drug].display, "genes": missing}
    return [Finding(key, order, values, (Evidence("no-result", {"genes": missing}),))]


RULE = Rule(
    name="untested", evaluate=untested, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "genes"}),
    findings=("untested-new-start", "untested-nudt15", "untested-established"),
    evidence={"no-result": frozenset({"genes"})},
)
