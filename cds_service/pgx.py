"""TPMT / NUDT15 results in FHIR R4 Observations -> one CPIC phenotype per gene.

Reads every shape in clinical-knowledge.md section 4: lab phenotype codes, the legacy 53040-2 and
genomics-reporting therapeutic-implication observations, genotypes (diplotypes) and TPMT enzyme
activity. Codes, allele functions and wording live in cards/pgx.yaml; this module checks them once
and applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .errors import KnowledgeError
from .fhir_read import parse_time

PHENOTYPES = ("normal", "intermediate", "possible_intermediate", "poor", "indeterminate", "unknown")
KINDS = ("phenotype", "genotype", "activity")
SECTIONS = ("version", "sources", "systems", "phenotypes", "genes", "generic_codes", "components",
            "answers", "phenotype_text", "pair_rules", "activity")
# Same-dated results tie-break to the more severe phenotype: under-calling deficiency is the
# dangerous error.
_SEVERITY = {"normal": 0, "indeterminate": 1, "possible_intermediate": 2, "intermediate": 3,
             "poor": 4}
_LOINC_CODE = re.compile(r"^(\d{1,7})-(\d)$")
_ALLELE = re.compile(r"^\*[0-9A-Z]+$")
_HGNC = re.compile(r"^HGNC:\d+$")


@dataclass(frozen=True)
class GeneResult:
    gene: str            # "TPMT" or "NUDT15"
    phenotype: str       # one of PHENOTYPES
    form: str            # "phenotype" | "diplotype" | "activity"
    evidence: str        # one line for a clinician
    resource: str        # "Observation/<id>" (or "Observation" when the id is missing)
    effective: str | None  # effectiveDateTime/issued/effectivePeriod.start as given, or None


class _Code(NamedTuple):
    system: str
    kind: str
    genes: frozenset[str]  # empty: a generic code that may carry any gene's result


class _Reading(NamedTuple):
    gene: str
    phenotype: str
    form: str
    detail: str  # what the lab sent, as shown in evidence and problems


class _Unreadable(Exception):
    """An observation that looks like a TPMT/NUDT15 result but cannot be read."""


class PgxKnowledge:
    def __init__(self, data: dict[str, Any], codes: dict[str, _Code], hgnc: dict[str, str],
                 alleles: dict[str, dict[str, str]], pairs: dict[frozenset[str], str]) -> None:
        systems = data["systems"]
        self.version: str = data["version"]
        self.labels: dict[str, str] = data["phenotypes"]["labels"]
        self._codes = codes
        self._hgnc = hgnc
        self._hgnc_systems = frozenset(systems["hgnc"])
        self._symbols = frozenset(hgnc.values())
        self._loinc: str = systems["loinc"]
        self._interp_system: str = systems["interpretation"]
        self._gene_component: str = data["components"]["gene_studied"]["code"]
        self._med_component: str = data["components"]["medication_assessed"]["code"]
        self._alleles = alleles
        self._pairs = pairs
        self._answers = {a["code"]: a["phenotype"] for a in data["answers"]}
        self._terms: dict[str, str] = data["phenotype_text"]["terms"]
        activity = data["activity"]
        self._flag_codes: dict[str, str] = activity["interpretation_codes"]
        self._flag_text: dict[str, str] = activity["interpretation_text"]
        self._range_text: dict[str, str] = activity["range_text"]
        names = "|".join(re.escape(g) for g in sorted(self._symbols))
        self._gene_word = re.compile(rf"\b({names})\b", re.IGNORECASE)
        self._gene_prefix = re.compile(rf"^({names})\b[\s:-]*", re.IGNORECASE)
        self._diplotype = re.compile(
            rf"^(?:({names})\s*)?(\*[0-9A-Z]+)\s*/\s*(\*[0-9A-Z]+)$", re.IGNORECASE)

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def from_data(cls, data: dict) -> PgxKnowledge:
        if not isinstance(data, dict):
            raise KnowledgeError("pgx.yaml: expected a mapping at the top level")
        missing = [s for s in SECTIONS if s not in data]
        if missing:
            raise KnowledgeError(f"pgx.yaml: missing section(s): {', '.join(missing)}")
        sources = _sources(data["sources"])
        for section in ("systems", "phenotypes", "phenotype_text", "pair_rules", "activity"):
            _cite(data[section], section, sources)
        _check_systems(data["systems"])
        labels = _need(data["phenotypes"], "labels", dict, "phenotypes")
        if set(labels) != set(PHENOTYPES):
            raise KnowledgeError(f"pgx.yaml: phenotypes.labels must name exactly {PHENOTYPES}")
        pairs = _pair_rules(data["pair_rules"])
        functions = frozenset().union(*pairs)
        codes, hgnc, alleles = _genes(data, sources, functions)
        for kind, entries in _need(data, "generic_codes", dict, "pgx.yaml").items():
            _add_codes(codes, kind, entries, frozenset(), data, sources, "generic_codes")
        for name in ("gene_studied", "medication_assessed"):
            entry = _need(data["components"], name, dict, "components")
            _cite(entry, f"components.{name}", sources)
            _check_loinc(str(entry.get("code")), f"components.{name}")
        for i, answer in enumerate(_need(data, "answers", list, "pgx.yaml")):
            _cite(answer, f"answers[{i}]", sources)
            _phenotype(answer.get("phenotype"), f"answers[{i}]")
        _mapping(_need(data["phenotype_text"], "terms", dict, "phenotype_text"), "phenotype_text")
        for table in ("interpretation_codes", "interpretation_text", "range_text"):
            _mapping(_need(data["activity"], table, dict, "activity"), f"activity.{table}")
        return cls(data, codes, hgnc, alleles, pairs)

    def prefetch_codes(self) -> list[str]:
        """Every code that may carry a TPMT/NUDT15 result, for the prefetch `code=` search."""
        return sorted(self._codes)

    # ---- the cheap filter ----------------------------------------------------------------

    def is_relevant(self, observation: dict) -> bool:
        """Could this raw Observation carry a TPMT/NUDT15 result? No validation; runs per result."""
        generic = False
        for coding in (observation.get("code") or {}).get("coding") or ():
            entry = self._known(coding)
            if entry is not None:
                if entry.genes:
                    return True
                generic = True
        if not generic:
            return False
        # A generic code (e.g. 84413-4) is ours unless its gene component names another gene.
        named = False
        for component in observation.get("component") or ():
            if self._is_component(component, self._gene_component):
                named = True
                if self._component_gene(component):
                    return True
        return not named

    # ---- interpretation ------------------------------------------------------------------

    def interpret(self, observations: list[dict]) -> tuple[dict[str, GeneResult], list[str]]:
        by_ref = {f"Observation/{o['id']}": o for o in observations if o.get("id")}
        best: dict[str, tuple[tuple, GeneResult]] = {}
        problems: list[str] = []
        for obs in observations:
            if not self.is_relevant(obs):
                continue
            resource = f"Observation/{obs['id']}" if obs.get("id") else "Observation"
            effective, instant = _when(obs)
            try:
                readings = self._read(obs, by_ref)
            except _Unreadable as exc:
                problems.append(f"{resource}: {exc}; result not used")
                continue
            for r in readings:
                if r.phenotype == "unknown":
                    problems.append(f"{resource}: {r.gene} {r.detail}; result not used")
                    continue
                evidence = (f"{r.gene} {r.detail} ({r.form}) -> {self.labels[r.phenotype]}, "
                            f"{resource}, {effective or 'undated'}")
                result = GeneResult(r.gene, r.phenotype, r.form, evidence, resource, effective)
                # Latest wins; undated ranks last; same date: the more severe phenotype.
                rank = (instant is not None, instant or datetime.min.replace(tzinfo=UTC),
                        _SEVERITY[r.phenotype])
                if r.gene not in best or rank > best[r.gene][0]:
                    best[r.gene] = (rank, result)
        return {gene: result for gene, (_, result) in best.items()}, problems

    def _read(self, obs: dict, by_ref: dict[str, dict]) -> list[_Reading]:
        kind, code_genes = self._classify(obs)
        if kind == "genotype":
            return self._read_genotype(obs, code_genes, by_ref)
        if kind == "activity":
            gene = self._which_gene(obs, code_genes, by_ref, None)
            return [self._read_activity(obs, gene)] if gene else []
        phenotype, detail, named = self._read_phenotype(obs)
        gene = self._which_gene(obs, code_genes, by_ref, named)
        return [_Reading(gene, phenotype, "phenotype", detail)] if gene else []

    def _classify(self, obs: dict) -> tuple[str, frozenset[str]]:
        """The kind of the first known code, and the genes all known codes allow."""
        kind, genes = "", frozenset()
        for coding in (obs.get("code") or {}).get("coding") or ():
            entry = self._known(coding)
            if entry is not None:
                kind = kind or entry.kind
                genes |= entry.genes
        return kind, genes

    def _known(self, coding: dict) -> _Code | None:
        entry = self._codes.get(coding.get("code"))
        return entry if entry is not None and entry.system == coding.get("system") else None

    def _which_gene(self, obs: dict, code_genes: frozenset[str], by_ref: dict[str, dict],
                    named: str | None) -> str | None:
        """The one gene a result is about; None when a generic result shows no sign of ours."""
        stated = self._component_genes(obs)
        if len(code_genes) == 1:
            stated |= code_genes
        if named:
            if (stated or code_genes) and named not in (stated or code_genes):
                raise _Unreadable(f"the value names {named} but the observation is coded for "
                                  f"{'/'.join(sorted(stated or code_genes))}")
            return named
        if not stated:
            stated = self._derived_genes(obs, by_ref) or self._text_genes(obs)
        if len(stated) > 1:
            raise _Unreadable(f"names more than one gene ({', '.join(sorted(stated))})")
        if not stated and code_genes:
            raise _Unreadable(f"does not say which gene ({' or '.join(sorted(code_genes))}) "
                              "it reports")
        return next(iter(stated), None)

    # ---- phenotype form: LA code or wording; legacy 53040-2; therapeutic implication -----

    def _read_phenotype(self, obs: dict) -> tuple[str, str, str | None]:
        """(phenotype, what the lab sent, gene named in the wording) from the value, else from an
        implication component (the STU3 shape forbids Observation.value)."""
        holders = [obs] + [c for c in obs.get("component") or () if self._is_implication(c)]
        for holder in holders:
            if holder.get("valueCodeableConcept") or holder.get("valueString"):
                phenotype, detail, named = self._phenotype_value(holder)
                medication = self._medication(obs)
                if medication and phenotype != "unknown":
                    detail = f"{detail} for {medication}"
                return phenotype, detail, named
        return "unknown", "phenotype result carries no value", None

    def _phenotype_value(self, holder: dict) -> tuple[str, str, str | None]:
        concept = holder.get("valueCodeableConcept") or {}
        for coding in concept.get("coding") or ():
            if coding.get("system") == self._loinc and coding.get("code") in self._answers:
                phenotype = self._answers[coding["code"]]
                display = coding.get("display")
                shown = f'{coding["code"]} "{display}"' if display else coding["code"]
                if phenotype == "unknown":
                    return phenotype, f"{shown} is not a TPMT/NUDT15 phenotype", None
                return phenotype, shown, None
        texts = _texts(concept) + _strings(holder.get("valueString"))
        for text in texts:
            phenotype, named = self._phenotype_words(text)
            if phenotype:
                return phenotype, f'"{text}"', named
        shown = f'"{texts[0]}"' if texts else "a coded value"
        return "unknown", f"phenotype {shown} is not a term the service recognises", None

    def _phenotype_words(self, text: str) -> tuple[str | None, str | None]:
        words = _words(text)
        prefix = self._gene_prefix.match(words)
        named = prefix.group(1).upper() if prefix else None
        return self._terms.get(words[prefix.end():] if prefix else words), named

    # ---- diplotype form ------------------------------------------------------------------

    def _read_genotype(self, obs: dict, code_genes: frozenset[str],
                       by_ref: dict[str, dict]) -> list[_Reading]:
        text = self._genotype_text(obs)
        if text is None:
            gene = self._which_gene(obs, code_genes, by_ref, None)
            return [_Reading(gene, "unknown", "diplotype", "genotype result carries no value")
                    ] if gene else []
        readings = []
        for part in filter(None, (p.strip() for p in re.split(r"[;,]", text))):
            match = self._diplotype.match(part)  # a combined panel may list both genes
            named = match.group(1).upper() if match and match.group(1) else None
            gene = self._which_gene(obs, code_genes, by_ref, named)
            if gene is None:
                continue
            if match is None:
                readings.append(_Reading(gene, "unknown", "diplotype",
                                         f'genotype "{part}" is not a diplotype like *1/*3A'))
                continue
            first, second = match.group(2).upper(), match.group(3).upper()
            phenotype, note = self._diplotype_phenotype(gene, first, second)
            readings.append(_Reading(gene, phenotype, "diplotype", f"{first}/{second}{note}"))
        return readings

    def _genotype_text(self, obs: dict) -> str | None:
        texts = _texts(obs.get("valueCodeableConcept")) + _strings(obs.get("valueString"))
        return texts[0].strip() if texts else None

    def _diplotype_phenotype(self, gene: str, first: str, second: str) -> tuple[str, str]:
        table = self._alleles[gene]
        unlisted = [a for a in (first, second) if a not in table]
        if unlisted:  # e.g. a newly named star allele: CPIC calls such a pair Indeterminate
            return "indeterminate", f" ({', '.join(unlisted)} has no CPIC function in the table)"
        return self._pairs[frozenset((table[first], table[second]))], ""

    # ---- activity form (TPMT only) -------------------------------------------------------

    def _read_activity(self, obs: dict, gene: str) -> _Reading:
        quantity = obs.get("valueQuantity") or {}
        shown = f"activity {_quantity_text(quantity)}".rstrip()
        phenotype, basis = self._activity_flag(obs)
        if phenotype is None and isinstance(quantity.get("value"), int | float):
            phenotype, basis = self._activity_range(quantity, obs.get("referenceRange") or ())
        if phenotype is None:
            return _Reading(gene, "unknown", "activity",
                            f"{shown} has no interpretation or reference range the service can "
                            "read (cut-offs differ by lab)")
        return _Reading(gene, phenotype, "activity", f"{shown}, {basis}")

    def _activity_flag(self, obs: dict) -> tuple[str | None, str]:
        """The lab's own Observation.interpretation, most severe if it gives several."""
        found = []
        for concept in obs.get("interpretation") or ():
            for coding in concept.get("coding") or ():
                code, display = coding.get("code"), coding.get("display")
                if coding.get("system") in (None, self._interp_system) and code in self._flag_codes:
                    found.append((self._flag_codes[code], f"flagged {code}"))
                elif isinstance(display, str) and _words(display) in self._flag_text:
                    found.append((self._flag_text[_words(display)], f'flagged "{display}"'))
            text = concept.get("text")
            if isinstance(text, str) and _words(text) in self._flag_text:
                found.append((self._flag_text[_words(text)], f'flagged "{text}"'))
        if not found:
            return None, ""
        return max(found, key=lambda f: _SEVERITY[f[0]])

    def _activity_range(self, quantity: dict, ranges: Any) -> tuple[str | None, str]:
        """Read the value against the lab's referenceRange: a labelled band that holds the value
        (e.g. "deficient") decides; else below the normal range is intermediate, anything else
        normal. Ranges in other units, or labelled in words we don't know, are skipped."""
        value = quantity["value"]
        inside, normal = [], None
        for rng in ranges:
            if not _same_unit(quantity, rng) or (_bound(rng, "low"), _bound(rng, "high")) == (
                    None, None):
                continue
            label = _range_label(rng)
            phenotype = self._range_text.get(label) if label else "normal"
            if phenotype and _within(value, rng):
                inside.append((phenotype, f"in the lab's {label or 'reference'} range "
                               f"{_range_text(rng)}"))
            if phenotype == "normal" and normal is None:
                normal = rng
        if inside:
            return max(inside, key=lambda f: _SEVERITY[f[0]])
        if normal is None:
            return None, ""
        low = _bound(normal, "low")
        if low is not None and value < low:
            return "intermediate", f"below the reference range {_range_text(normal)}"
        return "normal", f"above the reference range {_range_text(normal)}"

    # ---- genes and components ------------------------------------------------------------

    def _is_component(self, component: dict, code: str) -> bool:
        return any(c.get("system") == self._loinc and c.get("code") == code
                   for c in (component.get("code") or {}).get("coding") or ())

    def _is_implication(self, component: dict) -> bool:
        return any((entry := self._known(c)) is not None and entry.kind == "phenotype"
                   for c in (component.get("code") or {}).get("coding") or ())

    def _component_gene(self, component: dict) -> str | None:
        concept = component.get("valueCodeableConcept") or {}
        for coding in concept.get("coding") or ():
            if coding.get("system") in self._hgnc_systems and coding.get("code") in self._hgnc:
                return self._hgnc[coding["code"]]
        return next((t.strip().upper() for t in _texts(concept)
                     if t.strip().upper() in self._symbols), None)

    def _component_genes(self, obs: dict) -> set[str]:
        return {gene for c in obs.get("component") or ()
                if self._is_component(c, self._gene_component)
                and (gene := self._component_gene(c))}

    def _derived_genes(self, obs: dict, by_ref: dict[str, dict]) -> set[str]:
        """Genes of the genotype(s) this result was derived from, when they were sent too."""
        genes: set[str] = set()
        for ref in obs.get("derivedFrom") or ():
            target = by_ref.get(_ref_key(ref.get("reference")))
            if target is not None and target is not obs:
                _, code_genes = self._classify(target)
                own = self._component_genes(target)
                if len(code_genes) == 1:
                    own |= code_genes
                genes |= own or self._text_genes(target)
        return genes

    def _text_genes(self, obs: dict) -> set[str]:
        """Gene names written in the code text or the values: the last resort."""
        texts = _strings((obs.get("code") or {}).get("text"), obs.get("valueString"))
        for holder in [obs, *(obs.get("component") or ())]:
            texts += _texts(holder.get("valueCodeableConcept"))
        return {m.upper() for t in texts for m in self._gene_word.findall(t)}

    def _medication(self, obs: dict) -> str | None:
        for component in obs.get("component") or ():
            if self._is_component(component, self._med_component):
                names = _texts(component.get("valueCodeableConcept"))
                return names[-1] if names else None  # its text, else a display
        return None


# ---- helpers on FHIR values ----------------------------------------------------------------

def _strings(*values: Any) -> list[str]:
    return [v for v in values if isinstance(v, str) and v.strip()]


def _texts(concept: dict | None) -> list[str]:
    """A CodeableConcept's non-empty coding displays, then its text."""
    concept = concept or {}
    return _strings(*(c.get("display") for c in concept.get("coding") or ()), concept.get("text"))


def _words(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _when(obs: dict) -> tuple[str | None, datetime | None]:
    """The date a result ranks by: effectiveDateTime/Instant, else issued, else period start."""
    for raw in (obs.get("effectiveDateTime"), obs.get("effectiveInstant"), obs.get("issued"),
                (obs.get("effectivePeriod") or {}).get("start")):
        if isinstance(raw, str) and raw.strip():
            return raw, parse_time(raw.strip())
    return None, None


def _ref_key(reference: Any) -> str | None:
    if not isinstance(reference, str) or "Observation/" not in reference:
        return None
    tail = reference.rsplit("Observation/", 1)[1].split("/_history", 1)[0]
    return f"Observation/{tail}"


def _quantity_text(quantity: dict) -> str:
    parts = [quantity.get("comparator"), quantity.get("value"), quantity.get("unit")
             or quantity.get("code")]
    return " ".join(str(p) for p in parts if p is not None)


def _bound(rng: dict, side: str) -> float | None:
    value = (rng.get(side) or {}).get("value")
    return value if isinstance(value, int | float) else None


def _within(value: float, rng: dict) -> bool:
    low, high = _bound(rng, "low"), _bound(rng, "high")
    return (low is None or value >= low) and (high is None or value <= high)


def _same_unit(quantity: dict, rng: dict) -> bool:
    for side in ("low", "high"):
        bound = rng.get(side) or {}
        for key in ("code", "unit"):
            if quantity.get(key) and bound.get(key):
                if quantity[key] != bound[key]:
                    return False
                break
    return True


def _range_label(rng: dict) -> str:
    """The lab's name for a range ("" when unlabelled: the ordinary reference range)."""
    kind = rng.get("type") or {}
    names = [rng.get("text"), kind.get("text")]
    names += [c.get("display") or c.get("code") for c in kind.get("coding") or ()]
    return next((_words(n) for n in names if isinstance(n, str) and n.strip()), "")


def _range_text(rng: dict) -> str:
    low, high = _bound(rng, "low"), _bound(rng, "high")
    unit = (rng.get("low") or rng.get("high") or {}).get("unit", "")
    span = f"{low}-{high}" if low is not None and high is not None else (
        f">= {low}" if low is not None else f"<= {high}")
    return f"{span} {unit}".rstrip()


# ---- knowledge validation ------------------------------------------------------------------

def _need(mapping: Any, key: str, kind: type, where: str) -> Any:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind):
        raise KnowledgeError(f"pgx.yaml: {where}.{key} missing or not a {kind.__name__}")
    return value


def _sources(data: Any) -> set[str]:
    if not isinstance(data, dict) or not data:
        raise KnowledgeError("pgx.yaml: sources must be a non-empty mapping")
    for sid, source in data.items():
        _need(source, "citation", str, f"sources.{sid}")
        if _need(source, "tag", str, f"sources.{sid}") not in ("V", "C", "U"):
            raise KnowledgeError(f"pgx.yaml: sources.{sid}.tag must be V, C or U")
    return set(data)


def _cite(entry: Any, where: str, sources: set[str]) -> None:
    cited = entry.get("source") if isinstance(entry, dict) else None
    ids = [cited] if isinstance(cited, str) else cited
    if not ids or not isinstance(ids, list):
        raise KnowledgeError(f"pgx.yaml: {where} names no source")
    unknown = [s for s in ids if s not in sources]
    if unknown:
        raise KnowledgeError(f"pgx.yaml: {where} cites unknown source(s) {unknown}")


def _phenotype(value: Any, where: str) -> str:
    if value not in PHENOTYPES:
        raise KnowledgeError(f"pgx.yaml: {where}: phenotype {value!r} is not one of {PHENOTYPES}")
    return value


def _mapping(table: dict, where: str) -> None:
    for key, value in table.items():
        if not isinstance(key, str):
            raise KnowledgeError(f"pgx.yaml: {where}: key {key!r} is not a string (quote it)")
        _phenotype(value, f"{where}.{key}")


def _check_systems(systems: dict) -> None:
    for name in ("loinc", "interpretation"):
        _need(systems, name, str, "systems")
    hgnc = _need(systems, "hgnc", list, "systems")
    if not hgnc or not all(isinstance(s, str) for s in hgnc):
        raise KnowledgeError("pgx.yaml: systems.hgnc must list the HGNC system URLs")


def _check_loinc(code: str, where: str) -> None:
    """LOINC's mod-10 check digit catches typos such as 79713-8 for 79713-4."""
    match = _LOINC_CODE.match(code)
    if not match:
        raise KnowledgeError(f"pgx.yaml: {where}: {code!r} is not a LOINC code")
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(match.group(1))):
        total += sum(divmod(digit * 2, 10)) if i % 2 == 0 else digit
    if (10 - total % 10) % 10 != int(match.group(2)):
        raise KnowledgeError(f"pgx.yaml: {where}: LOINC {code} fails its check digit")


def _pair_rules(section: dict) -> dict[frozenset[str], str]:
    pairs: dict[frozenset[str], str] = {}
    for i, rule in enumerate(_need(section, "rules", list, "pair_rules")):
        functions = rule.get("functions") if isinstance(rule, dict) else None
        if not (isinstance(functions, list) and len(functions) == 2
                and all(isinstance(f, str) for f in functions)):
            raise KnowledgeError(f"pgx.yaml: pair_rules.rules[{i}] needs two function names")
        key = frozenset(functions)
        if key in pairs:
            raise KnowledgeError(f"pgx.yaml: pair_rules: {functions} listed twice")
        pairs[key] = _phenotype(rule.get("phenotype"), f"pair_rules.rules[{i}]")
    functions = sorted(frozenset().union(*pairs))
    gaps = [(a, b) for i, a in enumerate(functions) for b in functions[i:]
            if frozenset((a, b)) not in pairs]
    if gaps:
        raise KnowledgeError(f"pgx.yaml: pair_rules has no phenotype for {gaps}")
    return pairs


def _genes(data: dict, sources: set[str], functions: frozenset[str]
           ) -> tuple[dict[str, _Code], dict[str, str], dict[str, dict[str, str]]]:
    codes: dict[str, _Code] = {}
    hgnc: dict[str, str] = {}
    alleles: dict[str, dict[str, str]] = {}
    genes = _need(data, "genes", dict, "pgx.yaml")
    if not genes:
        raise KnowledgeError("pgx.yaml: genes is empty")
    for gene, spec in genes.items():
        where = f"genes.{gene}"
        _cite(spec, where, sources)
        hgnc_id = _need(spec, "hgnc", str, where)
        if not _HGNC.match(hgnc_id) or hgnc_id in hgnc:
            raise KnowledgeError(f"pgx.yaml: {where}.hgnc {hgnc_id!r} is malformed or repeated")
        hgnc[hgnc_id] = gene
        for kind, entries in _need(spec, "codes", dict, where).items():
            _add_codes(codes, kind, entries, frozenset({gene}), data, sources, f"{where}.codes")
        table = _need(spec, "alleles", dict, where)
        _cite(table, f"{where}.alleles", sources)
        alleles[gene] = {}
        for allele, function in _need(table, "functions", dict, f"{where}.alleles").items():
            name = str(allele).upper()
            if not _ALLELE.match(name):
                raise KnowledgeError(f"pgx.yaml: {where}: {allele!r} is not a star allele")
            if function not in functions:
                raise KnowledgeError(f"pgx.yaml: {where}: allele {allele} has function "
                                     f"{function!r}, which no pair rule covers")
            alleles[gene][name] = function
    return codes, hgnc, alleles


def _add_codes(codes: dict[str, _Code], kind: str, entries: Any, genes: frozenset[str],
               data: dict, sources: set[str], where: str) -> None:
    if kind not in KINDS or not isinstance(entries, list):
        raise KnowledgeError(f"pgx.yaml: {where}.{kind}: kind must be one of {KINDS}, as a list")
    for i, entry in enumerate(entries):
        here = f"{where}.{kind}[{i}]"
        _cite(entry, here, sources)
        code, system = str(entry.get("code")), entry.get("system", data["systems"]["loinc"])
        if system == data["systems"]["loinc"]:
            _check_loinc(code, here)
        old = codes.get(code)
        if old and (old.kind != kind or old.system != system or not old.genes or not genes):
            raise KnowledgeError(f"pgx.yaml: {here}: code {code} is listed with another meaning")
        codes[code] = _Code(system, kind, genes | (old.genes if old else frozenset()))
