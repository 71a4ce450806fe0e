"""TPMT / NUDT15: the CPIC decision ladder, a match table in cards/pgx.yaml (first row wins)."""

from __future__ import annotations

from ..facts.conditions import Conditions
from ..facts.orders import Order
from ..facts.pgx import GeneResult, PgxResults
from ..findings import Evidence, Finding
from ..knowledge import Knowledge, schema
from . import THIOPURINE, Rule
from .dose import SENSED

RESULT = frozenset({"gene", "detail", "form", "phenotype", "resource", "date", "status"})
CONFLICT = frozenset({"gene", "phenotypes"})


def _matching(row: schema.LadderRow, results: dict[str, GeneResult], drug: str,
              malignant: bool, knowledge: Knowledge) -> tuple[str, ...]:
    """The genes that make the row match (empty: it does not)."""
    when = row.when
    if (when.drugs and drug not in when.drugs) or when.malignant not in (None, malignant):
        return ()
    genes = when.genes or list(knowledge.pgx.genes)
    hits = tuple(g for g in genes if g in results and results[g].phenotype in row.when.phenotypes)
    if row.when.require == "all" and len(hits) < len(genes):
        return ()
    return hits


def _ladder(order: Order, pgx: PgxResults, conditions: Conditions,
            knowledge: Knowledge) -> tuple[str, tuple[str, ...]] | None:
    """(finding key, the genes that matched) of the first matching row."""
    malignant = "malignancy" in conditions.for_order(order)
    for row in knowledge.pgx.spec.ladder:
        genes = _matching(row, pgx.by_gene, order.drug, malignant, knowledge)
        if genes:
            return row.finding, genes
    return None


def ladder_finding(order: Order, pgx: PgxResults, conditions: Conditions,
                   knowledge: Knowledge) -> str | None:
    found = _ladder(order, pgx, conditions, knowledge)
    return found[0] if found else None


def _evidence(pgx: PgxResults, knowledge: Knowledge) -> tuple[Evidence, ...]:
    labels = knowledge.pgx.spec.phenotypes.labels
    lines = [Evidence("pgx-result", {
        "gene": r.gene, "detail": r.detail, "form": r.form, "phenotype": labels[r.phenotype],
        "resource": r.resource, "date": r.effective, "status": r.status})
        for results in pgx.results.values() for r in results]
    for gene in pgx.results:
        if pgx.conflict(gene):
            shown = tuple(dict.fromkeys(labels[r.phenotype] for r in pgx.results[gene]))
            lines.append(Evidence("pgx-conflict", {"gene": gene, "phenotypes": shown}))
    return tuple(lines)


def pgx(order: Order, knowledge: Knowledge, *, pgx: PgxResults,
        conditions: Conditions) -> list[Finding]:
    found = _ladder(order, pgx, conditions, knowledge)
    if found is None:
        return []
    key, genes = found
    values = {"drug": knowledge.drugs[order.drug].display, "gene": genes}
    return [Finding(key, order, values, _evidence(pgx, knowledge))]


def _ladder_findings(knowledge: Knowledge) -> set[str]:
    keys = {row.finding for row in knowledge.pgx.spec.ladder}
    return keys | {f.if_reduced.finding for k in keys
                   if (f := knowledge.cards.findings.get(k)) and f.if_reduced}


RULE = Rule(
    name="pgx", evaluate=pgx, applies_to=frozenset({THIOPURINE}),
    values=frozenset({"drug", "gene"}) | SENSED, findings_in=_ladder_findings,
    evidence={"pgx-result": RESULT, "pgx-conflict": CONFLICT},
)
