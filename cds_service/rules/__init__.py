"""The clinical rules: each a declared unit in its own module, facts in, findings out.

A rule declares its name, the drug classes of the orders it judges, the findings it can emit with
the values they carry, and the evidence it can cite; its function asks for the facts it reads by
name (its keyword parameters) and returns values, never English: the cards' text lives in
cards/rules.yaml. `knowledge/wiring.py` checks every declaration against cards/ at start-up.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ..findings import Finding

if TYPE_CHECKING:
    from ..knowledge import Knowledge

THIOPURINE, XO_INHIBITOR = "thiopurine", "xanthine-oxidase-inhibitor"
# Rules the engine runs itself after the services' rules: on each order's findings, and once on
# the checks whose data could not be had. A service does not list them.
STAGES = ("dose-sense", "data-unavailable")


@dataclass(frozen=True)
class Rule:
    name: str
    evaluate: Callable[..., list[Finding]]      # (order, knowledge, **facts) -> findings
    applies_to: frozenset[str]                  # drug classes of the judged orders
    values: frozenset[str]                      # what its findings carry (template names)
    findings: tuple[str, ...] = ()              # the finding keys it can emit
    evidence: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kind -> values
    # Findings named in the knowledge files instead (e.g. drugs.yaml interactions).
    findings_in: Callable[[Knowledge], Iterable[str]] | None = None

    @cached_property
    def needs(self) -> tuple[str, ...]:
        """The facts it reads: its function's keyword-only parameters."""
        parameters = inspect.signature(self.evaluate).parameters.values()
        return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)

    def all_findings(self, knowledge: Knowledge) -> set[str]:
        return {*self.findings, *(self.findings_in(knowledge) if self.findings_in else ())}


def _registry() -> dict[str, Rule]:
    from . import (
        contraindications,
        cytopenia,
        data_unavailable,
        dose,
        dose_sense,
        duplicates,
        hepatotoxicity,
        interactions,
        monitoring,
        pgx,
        pregnancy,
        untested,
        xanthine_oxidase,
    )
    modules = (pgx, untested, xanthine_oxidase, cytopenia, dose, monitoring, hepatotoxicity,
               interactions, duplicates, contraindications, pregnancy, dose_sense,
               data_unavailable)
    return {m.RULE.name: m.RULE for m in modules}


RULES: dict[str, Rule] = _registry()
