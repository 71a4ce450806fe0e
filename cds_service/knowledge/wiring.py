"""The links between the knowledge files, and between them and the rules' declarations.

Each check raises KnowledgeError with one message naming the file, the key and the problem, so a
misspelled rule, finding or placeholder stops the start instead of answering every call with
"checks incomplete".
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from ..errors import KnowledgeError
from . import Knowledge, schema


def _fail(where: str, problem: str) -> KnowledgeError:
    return KnowledgeError(f"{where}: {problem}")


def _placeholders(template: str) -> set[str]:
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in
                string.Formatter().parse(template) if name}
    except ValueError as error:
        raise _fail("template", f"{template!r} is malformed ({error})") from None


def _check_template(template: str, allowed: Iterable[str], where: str) -> None:
    unknown = _placeholders(template) - set(allowed)
    if unknown:
        raise _fail(where, f"placeholder(s) {sorted(unknown)} are not values this finding"
                           f" carries (it carries {sorted(allowed)})")


def _cited(ids: str | list[str] | None) -> list[str]:
    return [ids] if isinstance(ids, str) else list(ids or [])


def _sources(files: dict[str, schema.File], known: set[str]) -> None:
    """Every `source`, `references` and `window_source` names a source in sources.yaml."""
    def walk(node: object, where: str) -> None:
        if isinstance(node, schema.Model):
            for name in type(node).model_fields:
                value = getattr(node, name)
                if name in ("source", "references", "window_source") and not isinstance(
                        value, schema.Model):
                    for cited in _cited(value):
                        if cited not in known:
                            raise _fail(where, f"{name}: unknown source '{cited}'")
                else:
                    walk(value, f"{where}.{name}")
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
    for name, spec in files.items():
        if name != "sources":
            walk(spec, f"{name}.yaml")


def _findings(knowledge: Knowledge, rules: dict) -> dict[str, object]:
    """Finding key -> the rule that emits it; every finding is emitted by exactly one rule."""
    cards = knowledge.cards
    owner: dict[str, object] = {}
    for rule in rules.values():
        for key in rule.all_findings(knowledge):
            if key not in cards.findings:
                raise _fail("rules.yaml", f"findings: '{key}' (emitted by rule '{rule.name}')"
                                          " is not defined")
            if owner.setdefault(key, rule) is not rule:
                raise _fail("rules.yaml", f"findings.{key}: emitted by two rules")
    unused = sorted(set(cards.findings) - set(owner))
    if unused:
        raise _fail("rules.yaml", f"findings {unused}: no rule emits them (misspelled?)")
    return owner


def _cards(knowledge: Knowledge, rules: dict) -> None:
    from ..cards import RENDERED, TEXT_VALUES

    cards = knowledge.cards
    for name, text in cards.texts.items():
        _check_template(text, TEXT_VALUES[name], f"rules.yaml: texts.{name}")
    for name, family in cards.families.items():
        for link in family.drug_labels:
            if link not in cards.links or not cards.links[link].drugs:
                raise _fail(f"rules.yaml: families.{name}",
                            f"drug_labels: '{link}' is not a link with drugs")
    for where, table in (("sources.yaml: sources", knowledge.sources),
                         ("rules.yaml: links", cards.links)):
        for name, item in table.items():
            for drug in set(item.drugs) - set(knowledge.drugs):
                raise _fail(f"{where}.{name}", f"drugs: '{drug}' is not in drugs.yaml")
    owners = _findings(knowledge, rules)
    for key, rule in owners.items():
        spec, where = cards.findings[key], f"rules.yaml: findings.{key}"
        if spec.family not in cards.families:
            raise _fail(where, f"family '{spec.family}' is not in families")
        if spec.if_reduced and owners.get(spec.if_reduced.finding) is not rule:
            raise _fail(where, f"if_reduced.finding '{spec.if_reduced.finding}' belongs to"
                               " another rule")
        allowed = rule.values | RENDERED
        _check_template(spec.summary, allowed, f"{where}.summary")
        _check_template(spec.recommendation, allowed, f"{where}.recommendation")
        for i, suggestion in enumerate(spec.suggestions):
            _check_template(suggestion.label, allowed, f"{where}.suggestions[{i}].label")
            _check_template(suggestion.because or "", rule.values,
                            f"{where}.suggestions[{i}].because")
            if suggestion.test and suggestion.test not in cards.tests:
                raise _fail(where, f"suggestions[{i}].test '{suggestion.test}' is not in tests")
            if (suggestion.kind == "reduce-dose" and suggestion.fraction is None
                    and "fraction" not in rule.values):
                raise _fail(where, f"suggestions[{i}]: a reduce-dose suggestion needs a"
                                   " fraction (none given, and the rule supplies none)")
        for name, table in (("links", cards.links), ("override", cards.override_reasons)):
            for item in getattr(spec, name):
                if item not in table:
                    raise _fail(where, f"{name}: '{item}' is not defined")
    declared: dict[str, frozenset[str]] = {}
    for rule in rules.values():
        for kind, names in rule.evidence.items():
            if kind not in cards.evidence:
                raise _fail("rules.yaml", f"evidence: '{kind}' (cited by rule '{rule.name}')"
                                          " has no template")
            _check_template(cards.evidence[kind], names, f"rules.yaml: evidence.{kind}")
            declared[kind] = names
    unused = sorted(set(cards.evidence) - set(declared))
    if unused:
        raise _fail("rules.yaml", f"evidence {unused}: no rule cites them (misspelled?)")


def _services(knowledge: Knowledge, rules: dict) -> None:
    from ..facts import FACTS, keys_of
    from ..rules import STAGES

    for key in sorted(set(knowledge.fallbacks) - set(knowledge.prefetch)):
        raise _fail("services.yaml: fallbacks", f"'{key}' is not a prefetch key")
    for service in knowledge.services.values():
        where = f"services.yaml: services.{service.id}"
        for key in service.prefetch:
            if key not in knowledge.prefetch:
                raise _fail(where, f"prefetch key '{key}' has no query in prefetch")
        for name in service.rules:
            if name not in rules or name in STAGES:
                raise _fail(where, f"rules: unknown rule '{name}' (known: "
                                   f"{sorted(set(rules) - set(STAGES))})")
            for fact in rules[name].needs:
                if fact not in FACTS:
                    raise _fail(where, f"rule '{name}' asks for an unknown fact '{fact}'")
                missing = sorted(keys_of(fact) - set(service.prefetch))
                if missing:
                    raise _fail(where, f"rule '{name}' reads {fact}, which needs prefetch"
                                       f" key(s) {missing}")


def _conditions(knowledge: Knowledge) -> None:
    from ..facts.conditions import READ

    for name in READ:
        if name not in knowledge.conditions:
            raise _fail("conditions.yaml", f"conditions.{name} is missing (the facts read it)")


def _drugs(knowledge: Knowledge) -> None:
    labs = knowledge.labs
    for i, row in enumerate(knowledge.pgx.spec.ladder):
        for drug in row.when.drugs:
            if drug not in knowledge.drugs:
                raise _fail("pgx.yaml", f"ladder.{i}: unknown drug '{drug}'")
        if row.when.malignant is not None and "malignancy" not in knowledge.conditions:
            raise _fail("pgx.yaml", f"ladder.{i}: malignant rows need conditions.malignancy")
    for name, drug in knowledge.drugs.items():
        if drug.allergy_group and drug.drug_class != "thiopurine":
            raise _fail("drugs.yaml", f"drugs.{name}: only thiopurines have an allergy group")
        for i, entry in enumerate(drug.dose_mg_kg_day):
            if entry.indication and entry.indication not in knowledge.conditions:
                raise _fail("drugs.yaml", f"drugs.{name}.dose_mg_kg_day[{i}]: indication"
                                          f" '{entry.indication}' is not in conditions.yaml")
    if not labs.body_weight.units.keys() >= {"kg"}:
        raise _fail("labs.yaml", "body_weight.units: 'kg' is required")


def check_wiring(knowledge: Knowledge, files: dict[str, schema.File]) -> None:
    from ..rules import RULES

    _sources(files, set(knowledge.sources))
    _cards(knowledge, RULES)
    _services(knowledge, RULES)
    _conditions(knowledge)
    _drugs(knowledge)
