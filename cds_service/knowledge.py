"""Clinical knowledge and card content, loaded from cards/*.yaml and validated once at start-up.

Everything an informaticist may change (codes, thresholds, windows, card text, links) lives in
the YAML files; this module only checks them and builds the lookup tables the engine uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import KnowledgeError
from .pgx import PgxKnowledge

_HERE = Path(__file__).resolve().parent
# Installed, the knowledge ships as cds_service/knowledge_data; in a checkout it is cards/.
_INSTALLED = _HERE / "knowledge_data"
DEFAULT_DIR = _INSTALLED if _INSTALLED.is_dir() else _HERE.parent / "cards"
INDICATORS = ("info", "warning", "critical")
SUGGESTION_KINDS = ("order-test", "reduce-dose", "remove-order")
_PLACEHOLDER = re.compile(r"\{codes:([a-z0-9-]+)\}")


@dataclass(frozen=True)
class Drug:
    name: str
    display: str
    drug_class: str
    products: dict[str, float]
    dose_step_mg: float
    text: tuple[str, ...]
    xo_substrate: bool  # a xanthine-oxidase inhibitor raises its levels
    normal_mg_kg_day: float | None  # low end of the normal starting dose; reduced ranges scale it
    dose_ranges: dict[str, dict]    # indication -> {range: [low, high], words, new_start_only}
    interaction: dict | None        # {effect, finding} for drugs that interact with thiopurines
    allergy_group: str | None       # an allergy to one member contraindicates the others


@dataclass(frozen=True)
class Analyte:
    name: str
    display: str
    codes: frozenset[str]
    critical_below: float | None
    lower_limit: float
    itp_sensitive: bool
    infer_ranges: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    usage: str | None
    prefetch: dict[str, str]
    rules: tuple[str, ...]  # rule names, checked against the engine's at start-up


@dataclass(frozen=True)
class Knowledge:
    version: str
    sources: dict[str, dict]
    drugs: dict[str, Drug]
    drug_codes: dict[tuple[str, str], str]
    drug_pattern: re.Pattern      # every drug name as a whole word, in one alternation
    drug_by_word: dict[str, str]
    drug_prefixes: tuple[tuple[str, str, str], ...]  # (system, code prefix, drug): ATC classes
    analytes: dict[str, Analyte]
    analyte_by_code: dict[str, str]
    unit_factors: dict[str, float]
    lookback_days: int
    trend_fall: float
    conditions: dict[str, dict]   # name -> {codes, prefixes, words, observation}
    weight: dict[str, Any]        # body_weight section of labs.yaml
    liver: dict[str, Any]         # liver_enzymes section
    monitoring: dict[str, Any]    # label CBC schedule
    rules: dict[str, Any]
    pgx: PgxKnowledge
    services: dict[str, Service]


def _need(mapping: Any, key: str, kind: type | tuple, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise KnowledgeError(f"{where}: '{key}' is missing")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise KnowledgeError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _read(directory: Path, name: str) -> dict:
    path = directory / name
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as error:
        raise KnowledgeError(f"{path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise KnowledgeError(f"{path}: a mapping with a 'version' string is required")
    return data


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_sources(cited: Any, sources: dict, where: str) -> None:
    for source in cited if isinstance(cited, list) else [cited]:
        if source not in sources:
            raise KnowledgeError(f"{where}: unknown source '{source}'")


_ORDERED_CLASSES = ("thiopurine", "xanthine-oxidase-inhibitor")  # need products and a dose step


def _drugs(data: dict, sources: dict) -> tuple[dict, dict, tuple, tuple]:
    """Drugs, their code index, (name pattern, name -> drug) and ATC class prefixes."""
    systems = _need(data, "systems", dict, "drugs.yaml")
    drugs, codes, words, prefixes = {}, {}, [], []
    for name, spec in _need(data, "drugs", dict, "drugs.yaml").items():
        where = f"drugs.yaml:{name}"
        _check_sources(_need(spec, "source", list, where), sources, where)
        ordered = _need(spec, "class", str, where) in _ORDERED_CLASSES
        products = {str(k): float(v) for k, v in (
            _need(spec, "products", dict, where) if ordered else spec.get("products", {})).items()}
        entries = [("rxnorm", c) for c in _need(spec, "rxnorm_ingredient", list, where)]
        entries += [("rxnorm", c) for c in [*products, *spec.get("groups", [])]]
        entries += [("atc", c) for c in _need(spec, "atc", list, where)]
        entries += [("snomed", c) for c in _need(spec, "snomed", list, where)]
        for system_key, code in entries:
            key = (_need(systems, system_key, str, "drugs.yaml:systems"), str(code))
            if codes.setdefault(key, name) != name:
                raise KnowledgeError(f"{where}: code {code} already belongs to {codes[key]}")
        text = tuple(w.lower() for w in _need(spec, "text", list, where))
        words += [(w, name) for w in text]
        prefixes += [(systems["atc"], p, name) for p in spec.get("atc_prefixes", [])]
        if spec.get("interaction") is not None:
            _need(spec["interaction"], "effect", str, f"{where}.interaction")
            _need(spec["interaction"], "finding", str, f"{where}.interaction")
        step = _need(spec, "dose_step_mg", (int, float), where) if ordered else 0
        drugs[name] = Drug(
            name, _need(spec, "display", str, where), spec["class"],
            products, float(step), text,
            spec.get("xanthine_oxidase_substrate") is True, spec.get("normal_mg_kg_day"),
            _dose_ranges(spec.get("dose_ranges_mg_kg_day", {}), where), spec.get("interaction"),
            spec.get("allergy_group"),
        )
    # Longest names first, so "6-mercaptopurine" wins over "mercaptopurine".
    names = sorted({w for w, _ in words}, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    return drugs, codes, (pattern, dict(words)), tuple(prefixes)  # (pattern, word -> drug)


def _dose_ranges(ranges: dict, where: str) -> dict[str, dict]:
    for name, spec in ranges.items():
        low, high = _need(spec, "range", list, f"{where}.{name}")
        if not 0 < low < high:
            raise KnowledgeError(f"{where}.{name}: range must be [low, high] with 0 < low < high")
        _need(spec, "words", list, f"{where}.{name}")
        _need(spec, "label", str, f"{where}.{name}")
    if ranges and "default" not in ranges:
        raise KnowledgeError(f"{where}: dose ranges need a 'default'")
    return ranges


def _labs(data: dict, sources: dict) -> tuple[dict, dict, dict]:
    analytes, by_code = {}, {}
    for name, spec in _need(data, "analytes", dict, "labs.yaml").items():
        where = f"labs.yaml:{name}"
        _check_sources(_need(spec, "source", list, where), sources, where)
        critical = spec.get("critical_below")
        if critical is not None and not isinstance(critical, int | float):
            raise KnowledgeError(f"{where}.critical_below: a number is required")
        lower = float(_need(spec, "lower_limit", (int, float), where))
        if critical is not None and critical > lower:
            raise KnowledgeError(f"{where}: critical_below is above lower_limit")
        ranges = {k: tuple(v) for k, v in _need(spec, "infer_unit", dict, where).items()}
        codes = frozenset(str(c) for c in _need(spec, "codes", list, where))
        for code in codes:
            if by_code.setdefault(code, name) != name:
                raise KnowledgeError(f"{where}: code {code} already belongs to {by_code[code]}")
        analytes[name] = Analyte(
            name, _need(spec, "display", str, where), codes,
            None if critical is None else float(critical), lower,
            bool(_need(spec, "itp_sensitive", bool, where)), ranges,
        )
    units = _need(data, "units", dict, "labs.yaml")
    _check_sources(_need(units, "source", str, "labs.yaml:units"), sources, "labs.yaml:units")
    factors = {str(k): float(v) for k, v in _need(units, "factors", dict, "labs.yaml").items()}
    return analytes, by_code, factors


def _condition(data: dict, name: str, sources: dict) -> dict:
    spec = _need(data, name, dict, "conditions.yaml")
    where = f"conditions.yaml:{name}"
    _check_sources(_need(spec, "source", list, where), sources, where)
    codes = frozenset((c["system"], str(c["code"])) for c in _need(spec, "codes", list, where))
    prefixes = tuple((p["system"], p["prefix"]) for p in spec.get("code_prefixes", []))
    return {"codes": codes, "prefixes": prefixes,
            "words": tuple(w.lower() for w in spec.get("words", [])),
            "observation": spec.get("observation")}


def _section(labs: dict, name: str, sources: dict) -> dict:
    section = _need(labs, name, dict, "labs.yaml")
    _check_sources(_need(section, "source", list, f"labs.yaml:{name}"), sources, name)
    if name == "monitoring":
        steps = _need(section, "schedule", list, "labs.yaml:monitoring")
        if not steps or "until_day" in steps[-1]:
            raise KnowledgeError("labs.yaml:monitoring: the last step must be open-ended")
    return section


def _rules(data: dict, sources: dict) -> dict:
    links, reasons = data.get("links", {}), data.get("override_reasons", {})
    tests = _need(data, "tests", dict, "rules.yaml")
    for test, spec in tests.items():
        _need(_need(spec, "code", dict, f"rules.yaml:tests.{test}"), "display", str, test)
        _check_sources(spec.get("source"), sources, f"rules.yaml:tests.{test}")
    for key, spec in _need(data, "findings", dict, "rules.yaml").items():
        where = f"rules.yaml:findings.{key}"
        if _need(spec, "indicator", str, where) not in INDICATORS:
            raise KnowledgeError(f"{where}: indicator must be one of {INDICATORS}")
        for field in ("family", "summary", "recommendation", "strength"):
            _need(spec, field, str, where)
        _check_sources(spec.get("references", []), sources, where)
        for link in spec.get("links", []):
            _need(links, link, dict, f"{where}.links")
        for reason in spec.get("override", []):
            _need(reasons, reason, str, f"{where}.override")
        for suggestion in spec.get("suggestions", []):
            if _need(suggestion, "kind", str, where) not in SUGGESTION_KINDS:
                raise KnowledgeError(f"{where}: unknown suggestion kind {suggestion['kind']}")
            _need(suggestion, "label", str, where)
            if suggestion["kind"] == "order-test":
                _need(tests, _need(suggestion, "test", str, where), dict, f"{where}.test")
            if suggestion["kind"] == "reduce-dose" and "fraction" in suggestion:
                _need(suggestion, "fraction", float, where)
        if "if_reduced" in spec:
            reduced = _need(spec, "if_reduced", dict, where)
            _need(reduced, "max_fraction", float, f"{where}.if_reduced")
            _need(data["findings"], _need(reduced, "finding", str, where), dict, where)
    return data


def _services(data: dict, value_sets: dict[str, list[str]]) -> dict[str, Service]:
    templates = _need(data, "prefetch", dict, "services.yaml")

    def expand(match: re.Match) -> str:
        if match.group(1) not in value_sets:
            raise KnowledgeError(f"services.yaml: unknown value set {match.group(1)}")
        return ",".join(value_sets[match.group(1)])

    expanded = {k: _PLACEHOLDER.sub(expand, v) for k, v in templates.items()}
    services = {}
    for spec in _need(data, "services", list, "services.yaml"):
        where = f"services.yaml:{spec.get('id')}"
        keys = _need(spec, "prefetch", list, where)
        for key in keys:
            _need(expanded, key, str, f"{where}.prefetch")
        services[_need(spec, "id", str, where)] = Service(
            spec["id"], _need(spec, "hook", str, where), _need(spec, "title", str, where),
            _need(spec, "description", str, where), spec.get("usageRequirements"),
            {key: expanded[key] for key in keys}, tuple(_need(spec, "rules", list, where)),
        )
    return services


def load_knowledge(directory: Path | str = DEFAULT_DIR) -> Knowledge:
    directory = Path(directory)
    files = {n: _read(directory, f"{n}.yaml") for n in
             ("sources", "drugs", "labs", "conditions", "rules", "pgx", "services")}
    sources = _need(files["sources"], "sources", dict, "sources.yaml")
    drugs, drug_codes, (drug_pattern, drug_by_word), drug_prefixes = _drugs(
        files["drugs"], sources)
    analytes, by_code, factors = _labs(files["labs"], sources)
    conditions = {name: _condition(files["conditions"], name, sources) for name in
                  ("itp", "pregnancy", "breastfeeding", "rheumatoid-arthritis")}
    pgx = PgxKnowledge.from_data(files["pgx"])
    labs = files["labs"]
    _check_sources(_need(labs, "window_source", list, "labs.yaml"), sources, "labs.yaml")
    weight, liver, monitoring = (_section(labs, n, sources) for n in
                                 ("body_weight", "liver_enzymes", "monitoring"))
    value_sets = {
        "blood-counts": sorted(by_code), "pgx": pgx.prefetch_codes(),
        "body-weight": weight["codes"], "liver": sorted(liver["analytes"]),
        "pregnancy-status": [conditions[n]["observation"]["code"]
                             for n in ("pregnancy", "breastfeeding")],
        "alkylating": sorted(c for (_, c), d in drug_codes.items() if d == "alkylating-agent"),
    }
    services = _services(files["services"], value_sets)
    return Knowledge(
        version="+".join(f"{n}@{d['version']}" for n, d in sorted(files.items())),
        sources=sources, drugs=drugs, drug_codes=drug_codes, drug_pattern=drug_pattern,
        drug_by_word=drug_by_word,
        drug_prefixes=drug_prefixes,
        analytes=analytes, analyte_by_code=by_code, unit_factors=factors,
        lookback_days=int(_need(files["labs"], "lookback_days", int, "labs.yaml")),
        trend_fall=float(_need(files["labs"], "trend_fall_fraction", float, "labs.yaml")),
        conditions=conditions, weight=weight, liver=liver, monitoring=monitoring,
        rules=_rules(files["rules"], sources), pgx=pgx, services=services,
    )
