"""TPMT / NUDT15: the CPIC decision ladder, a match table in cards/pgx.yaml (first row wins)."""

from __future__ import annotations

from ..facts.measurements import Measurement
from ..facts.orders import Order
from ..facts.pgx import GeneResult, PgxResults
from ..findings import Evidence, Finding
from ..knowledge import Knowledge, schema
from . import THIOPURINE, Rule
from .dose import PER_KG, maybe_reduced

RESULT = frozenset({"gene", "detail", "form", "phenotype", "resource", "date"})


def evidence(result: GeneResult, knowledge: Knowledge) -> Evidence:
    return Evidence("pgx-result", {
        "gene": result.gene, "detail": result.detail, "form": result.form,
        "phenotype": knowledge.pgx.spec.phenotypes.labels[result.phenotype],
        "resource": result.resource, "date": result.effective})


def _matching(row: schema.LadderRow, results: dict[str, GeneResult],
              knowledge: Knowledge) -> tuple[str, ...]:
    """The genes that make the row match (empty: it does not)."""
    genes = row.when.genes or list(knowledge.pgx.genes)
    hits = tuple(g for g in genes if g in results and results[g].phenotype in row.when.phenotypes)
    if row.when.require == "all" and len(hits) < len(genes):
        return ()
    return hits


def pgx(order: Order, knowledge: Knowledge, *, pgx: PgxResults,
        weight: Measurement | None) -> list[Finding]:
    results = pgx.by_gene
    for row in knowledge.pgx.spec.ladder:
        genes = _matching(row, results, knowledge)
        if genes:
            values = {"drug": knowledge.drugs[order.drug].display, "gene": genes}
            found = Finding(row.finding, order, values,
                            tuple(evidence(r, knowledge) for r in results.values()))
            return [maybe_reduced(found, weight, knowledge)]
    return []


def _ladder_findings(knowledge: Knowledge) -> set[str]:
    keys = {row.finding for row in knowledge.pgx.spec.ladder}
    return keys | {f.if_reduced.finding for k in keys
                   if (f := knowledge.cards.findings.get(k)) and f.if_reduced}


RULE = Rule(
    name="pgx", evaluate=pgx, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "gene", "dose_kg"}), findings_in=_ladder_findings,
    evidence={"pgx-result": RESULT, "dose-per-kg": PER_KG},
)
