"""Data a rule needed that could not be had or read: one card naming each check and why.

Run once per request, after the other rules, on the checks of the facts they asked for."""

from __future__ import annotations

from collections.abc import Mapping

from ..findings import Evidence, Finding
from ..knowledge import Knowledge
from . import Rule


def data_unavailable(hook: str, knowledge: Knowledge, *,
                     unavailable: Mapping[str, list[str]]) -> list[Finding]:
    checks = tuple(check for check, reasons in unavailable.items() if reasons)
    if not checks:
        return []
    evidence = tuple(Evidence("unavailable", {"check": check, "reason": reason})
                     for check in checks for reason in unavailable[check])
    # On patient-view nothing is being ordered: info is enough, but never silence.
    key = "data-unavailable-patient-view" if hook == "patient-view" else "data-unavailable"
    return [Finding(key, None, {"checks": checks}, evidence)]


RULE = Rule(
    name="data-unavailable", evaluate=data_unavailable, applies_to=frozenset(),
    values=frozenset({"checks"}),
    findings=("data-unavailable", "data-unavailable-patient-view"),
    evidence={"unavailable": frozenset({"check", "reason"})},
)
