"""TPMT / NUDT15 results in FHIR Observations -> a CPIC phenotype per gene.

Reads every shape in clinical-knowledge.md section 4: lab phenotype codes, the legacy 53040-2 and
genomics-reporting therapeutic-implication observations, genotypes (diplotypes) and TPMT enzyme
activity. Codes, allele functions and wording come from cards/pgx.yaml (`knowledge.pgx`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, NamedTuple

from ..fhir_read import Invalid, as_list, effective_time, read_quantity, reference, status
from ..knowledge import Knowledge, Pgx, PgxCode
from .counts import COUNTED_STATUSES

# When results disagree the more severe governs: under-calling deficiency is the dangerous error.
SEVERITY = {"normal": 0, "indeterminate": 1, "possible_intermediate": 2, "intermediate": 3,
            "intermediate_or_poor": 4, "poor": 5}
# A preliminary result is evidence too (the card says it is preliminary).
STATUSES = COUNTED_STATUSES | {"preliminary"}


@dataclass(frozen=True)
class GeneResult:
    gene: str            # "TPMT" or "NUDT15"
    phenotype: str       # a phenotype id of cards/pgx.yaml
    form: str            # "phenotype" | "diplotype" | "activity"
    detail: str          # what the lab sent, and how it was read
    resource: str        # "Observation/<id>" (or "Observation" when the id is missing)
    effective: str       # the date as given, or "undated"
    status: str = "final"


@dataclass(frozen=True)
class PgxResults:
    by_gene: dict[str, GeneResult] = field(default_factory=dict)      # the governing result
    results: dict[str, tuple[GeneResult, ...]] = field(default_factory=dict)  # all, newest first
    complete: bool = True            # False: a result may exist that could not be had or read
    problems: tuple[str, ...] = ()

    def conflict(self, gene: str) -> bool:
        """The gene's results disagree (the governing one is the most severe)."""
        return len({r.phenotype for r in self.results.get(gene, ())}) > 1

    @property
    def uncertain(self) -> bool:
        """A phenotype the results do not settle: not all could be had or read, conflicting,
        or a low activity no band places. A dose is never judged 'already reduced' then."""
        return not self.complete or any(self.conflict(g) or r.phenotype == "intermediate_or_poor"
                                        for g, r in self.by_gene.items())


class _Reading(NamedTuple):
    gene: str
    phenotype: str
    form: str
    detail: str


class _Unreadable(Exception):
    """An observation that looks like a TPMT/NUDT15 result but cannot be read."""


@dataclass(frozen=True)
class _Patterns:
    gene_word: re.Pattern
    gene_prefix: re.Pattern
    diplotype: re.Pattern


@cache
def _patterns(genes: tuple[str, ...]) -> _Patterns:
    names = "|".join(re.escape(g) for g in sorted(genes))
    return _Patterns(
        re.compile(rf"\b({names})\b", re.IGNORECASE),
        re.compile(rf"^({names})\b[\s:-]*", re.IGNORECASE),
        re.compile(rf"^(?:({names})\s*)?(\*[0-9A-Z]+)\s*/\s*(\*[0-9A-Z]+)$", re.IGNORECASE))


def read_pgx(observations: tuple[dict, ...], knowledge: Knowledge, complete: bool) -> PgxResults:
    """Every readable result per gene; the most severe governs (same phenotype: the newest)."""
    pgx = knowledge.pgx
    relevant = [o for o in observations if o.get("resourceType") == "Observation"
                and status(o) in STATUSES and _relevant(pgx, o)]
    by_ref = {f"Observation/{o['id']}": o for o in relevant if isinstance(o.get("id"), str)}
    found: dict[str, list[tuple[tuple, GeneResult]]] = {}
    problems: list[str] = []
    for obs in relevant:
        resource = reference(obs)
        try:
            instant = effective_time(obs)
            readings = _Reader(pgx, by_ref).read(obs)
        except (_Unreadable, Invalid) as exc:
            problems.append(f"{resource}: {exc}; result not used")
            continue
        except (TypeError, AttributeError, ValueError):  # an element of the wrong JSON type
            problems.append(f"{resource}: malformed (an element read has the wrong type);"
                            " result not used")
            continue
        shown = instant.strftime("%Y-%m-%d") if instant else "undated"
        for r in readings:
            if r.phenotype == "unknown":
                problems.append(f"{resource}: {r.gene} {r.detail}; result not used")
                continue
            result = GeneResult(r.gene, r.phenotype, r.form, r.detail, resource, shown,
                                status(obs))
            newest = (instant is not None, instant or datetime.min.replace(tzinfo=UTC))
            found.setdefault(r.gene, []).append((newest, result))
    results = {gene: tuple(r for _, r in sorted(items, key=lambda i: i[0], reverse=True))
               for gene, items in found.items()}
    governing = {gene: max(items, key=lambda r: SEVERITY[r.phenotype])
                 for gene, items in results.items()}
    return PgxResults(governing, results, complete and not problems, tuple(problems))


def _known(pgx: Pgx, coding: Any) -> PgxCode | None:
    code = coding.get("code") if isinstance(coding, dict) else None
    if not isinstance(code, str):
        return None
    entry = pgx.codes.get(code)
    system = coding.get("system")
    return entry if entry is not None and entry.system == system else None


def _relevant(pgx: Pgx, observation: dict) -> bool:
    """Could this Observation carry a TPMT/NUDT15 result? A malformed shape, or a code the
    service does not know whose name names one of the genes, counts as yes, so that it is read
    or reported rather than dropped."""
    try:
        generic = False
        for coding in as_list((observation.get("code") or {}).get("coding")):
            entry = _known(pgx, coding)
            if entry is not None:
                if entry.genes:
                    return True
                generic = True
        if not generic:
            names = _texts(observation.get("code"))
            return bool(names) and any(
                _patterns(tuple(sorted(pgx.spec.genes))).gene_word.search(n) for n in names)
        # A generic code (e.g. 84413-4) is ours unless its gene component names another gene.
        reader = _Reader(pgx, {})
        named = [c for c in as_list(observation.get("component"))
                 if reader.is_component(c, pgx.spec.components.gene_studied.code)]
        return not named or any(reader.component_gene(c) for c in named)
    except (TypeError, AttributeError):
        return True


class _Reader:
    """Reads one observation's gene readings (raises _Unreadable for what it cannot read)."""

    def __init__(self, pgx: Pgx, by_ref: dict[str, dict]) -> None:
        self.pgx = pgx
        self.by_ref = by_ref
        self.loinc = pgx.spec.systems.loinc
        self.symbols = frozenset(pgx.spec.genes)
        self.patterns = _patterns(tuple(sorted(self.symbols)))

    def read(self, obs: dict) -> list[_Reading]:
        kind, code_genes = self.classify(obs)
        if kind == "genotype":
            return self.read_genotype(obs, code_genes)
        if kind == "activity":
            gene = self.which_gene(obs, code_genes, None)
            return [self.read_activity(obs, gene)] if gene else []
        phenotype, detail, named = self.read_phenotype(obs)
        gene = self.which_gene(obs, code_genes, named)
        return [_Reading(gene, phenotype, "phenotype", detail)] if gene else []

    def classify(self, obs: dict) -> tuple[str, frozenset[str]]:
        """The kind of the first known code, and the genes all known codes allow."""
        kind, genes = "", frozenset()
        for coding in as_list((obs.get("code") or {}).get("coding")):
            entry = _known(self.pgx, coding)
            if entry is not None:
                kind = kind or entry.kind
                genes |= entry.genes
        return kind, genes

    def which_gene(self, obs: dict, code_genes: frozenset[str], named: str | None) -> str | None:
        """The one gene a result is about; None when a generic result shows no sign of ours."""
        stated = self.component_genes(obs)
        if len(code_genes) == 1:
            stated |= code_genes
        if named:
            if (stated or code_genes) and named not in (stated or code_genes):
                raise _Unreadable(f"the value names {named} but the observation is coded for "
                                  f"{'/'.join(sorted(stated or code_genes))}")
            return named
        if not stated:
            stated = self.derived_genes(obs) or self.text_genes(obs)
        if len(stated) > 1:
            raise _Unreadable(f"names more than one gene ({', '.join(sorted(stated))})")
        if not stated and code_genes:
            raise _Unreadable(f"does not say which gene ({' or '.join(sorted(code_genes))}) "
                              "it reports")
        return next(iter(stated), None)

    # ---- phenotype form: LA code or wording; legacy 53040-2; therapeutic implication -----

    def read_phenotype(self, obs: dict) -> tuple[str, str, str | None]:
        """(phenotype, what the lab sent, gene named in the wording) from the value, else from an
        implication component (the STU3 shape forbids Observation.value)."""
        holders = [obs] + [c for c in as_list(obs.get("component")) if self.is_implication(c)]
        for holder in holders:
            if holder.get("valueCodeableConcept") or holder.get("valueString"):
                phenotype, detail, named = self.phenotype_value(holder)
                medication = self.medication(obs)
                if medication and phenotype != "unknown":
                    detail = f"{detail} for {medication}"
                return phenotype, detail, named
        return "unknown", "phenotype result carries no value", None

    def phenotype_value(self, holder: dict) -> tuple[str, str, str | None]:
        concept = holder.get("valueCodeableConcept") or {}
        for coding in as_list(concept.get("coding")):
            if (isinstance(coding, dict) and coding.get("system") == self.loinc
                    and coding.get("code") in self.pgx.answers):
                phenotype = self.pgx.answers[coding["code"]]
                display = coding.get("display")
                shown = f'{coding["code"]} "{display}"' if display else coding["code"]
                if phenotype == "unknown":
                    return phenotype, f"{shown} is not a TPMT/NUDT15 phenotype", None
                return phenotype, shown, None
        texts = _texts(concept) + _strings(holder.get("valueString"))
        for text in texts:
            phenotype, named = self.phenotype_words(text)
            if phenotype:
                return phenotype, f'"{text}"', named
        shown = f'"{texts[0]}"' if texts else "a coded value"
        return "unknown", f"phenotype {shown} is not a term the service recognises", None

    def phenotype_words(self, text: str) -> tuple[str | None, str | None]:
        words = _words(text)
        prefix = self.patterns.gene_prefix.match(words)
        named = prefix.group(1).upper() if prefix else None
        terms = self.pgx.spec.phenotype_text.terms
        return terms.get(words[prefix.end():] if prefix else words), named

    # ---- diplotype form ------------------------------------------------------------------

    def read_genotype(self, obs: dict, code_genes: frozenset[str]) -> list[_Reading]:
        texts = _texts(obs.get("valueCodeableConcept")) + _strings(obs.get("valueString"))
        if not texts:
            gene = self.which_gene(obs, code_genes, None)
            return [_Reading(gene, "unknown", "diplotype", "genotype result carries no value")
                    ] if gene else []
        readings = []
        for part in filter(None, (p.strip() for p in re.split(r"[;,]", texts[0].strip()))):
            match = self.patterns.diplotype.match(part)  # a combined panel may list both genes
            named = match.group(1).upper() if match and match.group(1) else None
            gene = self.which_gene(obs, code_genes, named)
            if gene is None:
                continue
            if match is None:
                readings.append(_Reading(gene, "unknown", "diplotype",
                                         f'genotype "{part}" is not a diplotype like *1/*3A'))
                continue
            first, second = match.group(2).upper(), match.group(3).upper()
            phenotype, note = self.diplotype_phenotype(gene, first, second)
            readings.append(_Reading(gene, phenotype, "diplotype", f"{first}/{second}{note}"))
        return readings

    def diplotype_phenotype(self, gene: str, first: str, second: str) -> tuple[str, str]:
        table = self.pgx.alleles[gene]
        unlisted = [a for a in (first, second) if a not in table]
        if unlisted:  # e.g. a newly named star allele: CPIC calls such a pair Indeterminate
            return "indeterminate", f" ({', '.join(unlisted)} has no CPIC function in the table)"
        return self.pgx.pairs[frozenset((table[first], table[second]))], ""

    # ---- activity form (TPMT only) -------------------------------------------------------

    def read_activity(self, obs: dict, gene: str) -> _Reading:
        """The most severe of the lab's flag, its words and the value against its range."""
        quantity = read_quantity(obs.get("valueQuantity"), "valueQuantity")
        shown = (f"activity {quantity.comparator or ''}{quantity.value:g} {quantity.display}"
                 .rstrip() if quantity else "activity")
        readings = [self.activity_flag(obs), self.activity_words(obs)]
        if quantity is not None:
            readings.append(self.activity_range(quantity.value, quantity.unit,
                                                as_list(obs.get("referenceRange"))))
        readings = [r for r in readings if r[0] is not None]
        if not readings:
            return _Reading(gene, "unknown", "activity",
                            f"{shown} has no interpretation or reference range the service can "
                            "read (cut-offs differ by lab)")
        phenotype = max(readings, key=lambda r: SEVERITY[r[0]])[0]
        basis = "; ".join(b for p, b in readings)
        return _Reading(gene, phenotype, "activity", f"{shown}, {basis}")

    def activity_words(self, obs: dict) -> tuple[str | None, str]:
        """Words such as "deficient" in the value, the interpretation text or the notes."""
        texts = _strings(obs.get("valueString")) + _texts(obs.get("valueCodeableConcept"))
        texts += [t for c in as_list(obs.get("interpretation")) for t in _texts(c)]
        texts += [n["text"] for n in as_list(obs.get("note"))
                  if isinstance(n, dict) and isinstance(n.get("text"), str)]
        words = self.pgx.spec.activity.words
        found = [(phenotype, f'the lab wrote "{word}"') for text in texts for word, phenotype
                 in words.items() if re.search(rf"\b{re.escape(word)}\b", text, re.I)]
        return max(found, key=lambda f: SEVERITY[f[0]]) if found else (None, "")

    def activity_flag(self, obs: dict) -> tuple[str | None, str]:
        """The lab's own Observation.interpretation, most severe if it gives several."""
        spec = self.pgx.spec.activity
        found = []
        for concept in as_list(obs.get("interpretation")):
            if not isinstance(concept, dict):
                continue
            for coding in as_list(concept.get("coding")):
                if not isinstance(coding, dict):
                    continue
                code, display = coding.get("code"), coding.get("display")
                if (coding.get("system") in (None, self.pgx.spec.systems.interpretation)
                        and code in spec.interpretation_codes):
                    found.append((spec.interpretation_codes[code], f"flagged {code}"))
                elif isinstance(display, str) and _words(display) in spec.interpretation_text:
                    found.append((spec.interpretation_text[_words(display)],
                                  f'flagged "{display}"'))
            text = concept.get("text")
            if isinstance(text, str) and _words(text) in spec.interpretation_text:
                found.append((spec.interpretation_text[_words(text)], f'flagged "{text}"'))
        if not found:
            return None, ""
        return max(found, key=lambda f: SEVERITY[f[0]])

    def activity_range(self, value: float, unit: str, ranges: list) -> tuple[str | None, str]:
        """Read the value against the lab's referenceRange: a labelled band that holds the value
        (e.g. "deficient") decides; else below the normal range is intermediate, anything else
        normal. Ranges in other units, or labelled in words we don't know, are skipped."""
        inside, normal = [], None
        for index, rng in enumerate(ranges):
            if isinstance(rng, dict):
                _check_bounds(rng, index)
            if not isinstance(rng, dict) or not _same_unit(unit, rng) or (
                    _bound(rng, "low"), _bound(rng, "high")) == (None, None):
                continue
            label = _range_label(rng)
            phenotype = self.pgx.spec.activity.range_text.get(label) if label else "normal"
            if phenotype and phenotype != "normal" and _within(value, rng):
                inside.append((phenotype, f"in the lab's {label or 'reference'} range "
                               f"{_range_text(rng)}"))
            if phenotype == "normal" and normal is None:
                normal = rng
        if inside:
            return max(inside, key=lambda f: SEVERITY[f[0]])
        if normal is None:
            return None, ""
        low = _bound(normal, "low")
        if low is None:  # an upper limit alone says nothing about deficiency
            return None, ""
        if value >= low:
            return "normal", f"within or above the reference range {_range_text(normal)}"
        spec = self.pgx.spec.activity
        ratio = value / low if low > 0 else 0.0
        phenotype = ("poor" if ratio < spec.poor_below else "intermediate_or_poor"
                     if ratio < spec.intermediate_from else "intermediate")
        return phenotype, (f"{ratio:.2f} of the lower limit of the reference range "
                           f"{_range_text(normal)}")

    # ---- genes and components ------------------------------------------------------------

    def is_component(self, component: Any, code: str) -> bool:
        return isinstance(component, dict) and any(
            isinstance(c, dict) and c.get("system") == self.loinc and c.get("code") == code
            for c in as_list((component.get("code") or {}).get("coding")))

    def is_implication(self, component: Any) -> bool:
        return isinstance(component, dict) and any(
            (entry := _known(self.pgx, c)) is not None and entry.kind == "phenotype"
            for c in as_list((component.get("code") or {}).get("coding")))

    def component_gene(self, component: dict) -> str | None:
        concept = component.get("valueCodeableConcept") or {}
        for coding in as_list(concept.get("coding")):
            if (isinstance(coding, dict) and coding.get("system") in self.pgx.spec.systems.hgnc
                    and coding.get("code") in self.pgx.hgnc):
                return self.pgx.hgnc[coding["code"]]
        return next((t.strip().upper() for t in _texts(concept)
                     if t.strip().upper() in self.symbols), None)

    def component_genes(self, obs: dict) -> set[str]:
        code = self.pgx.spec.components.gene_studied.code
        return {gene for c in as_list(obs.get("component")) if self.is_component(c, code)
                and (gene := self.component_gene(c))}

    def derived_genes(self, obs: dict) -> set[str]:
        """Genes of the genotype(s) this result was derived from, when they were sent too."""
        genes: set[str] = set()
        for ref in as_list(obs.get("derivedFrom")):
            target = self.by_ref.get(_ref_key(ref.get("reference") if isinstance(ref, dict)
                                              else None))
            if target is not None and target is not obs:
                _, code_genes = self.classify(target)
                own = self.component_genes(target)
                if len(code_genes) == 1:
                    own |= code_genes
                genes |= own or self.text_genes(target)
        return genes

    def text_genes(self, obs: dict) -> set[str]:
        """Gene names written in the code text or the values: the last resort."""
        texts = _strings((obs.get("code") or {}).get("text"), obs.get("valueString"))
        for holder in [obs, *as_list(obs.get("component"))]:
            if isinstance(holder, dict):
                texts += _texts(holder.get("valueCodeableConcept"))
        return {m.upper() for t in texts for m in self.patterns.gene_word.findall(t)}

    def medication(self, obs: dict) -> str | None:
        code = self.pgx.spec.components.medication_assessed.code
        for component in as_list(obs.get("component")):
            if self.is_component(component, code):
                names = _texts(component.get("valueCodeableConcept"))
                return names[-1] if names else None  # its text, else a display
        return None


# ---- helpers on FHIR values ----------------------------------------------------------------

def _strings(*values: Any) -> list[str]:
    return [v for v in values if isinstance(v, str) and v.strip()]


def _texts(concept: Any) -> list[str]:
    """A CodeableConcept's non-empty coding displays, then its text."""
    concept = concept if isinstance(concept, dict) else {}
    displays = [c.get("display") for c in as_list(concept.get("coding")) if isinstance(c, dict)]
    return _strings(*displays, concept.get("text"))


def _words(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _ref_key(ref: Any) -> str | None:
    if not isinstance(ref, str) or "Observation/" not in ref:
        return None
    tail = ref.rsplit("Observation/", 1)[1].split("/_history", 1)[0]
    return f"Observation/{tail}"


def _check_bounds(rng: dict, index: int) -> None:
    """A bound that is present must be a number: read as absent, it would turn a low activity
    into a normal one."""
    for side in ("low", "high"):
        bound = rng.get(side)
        if bound is not None and (not isinstance(bound, dict) or "value" in bound):
            read_quantity(bound, f"referenceRange[{index}].{side}")


def _bound(rng: dict, side: str) -> float | None:
    bound = rng.get(side)
    value = bound.get("value") if isinstance(bound, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _within(value: float, rng: dict) -> bool:
    low, high = _bound(rng, "low"), _bound(rng, "high")
    return (low is None or value >= low) and (high is None or value <= high)


def _same_unit(unit: str, rng: dict) -> bool:
    for side in ("low", "high"):
        bound = rng.get(side)
        if isinstance(bound, dict):
            theirs = bound.get("code") or bound.get("unit")
            if unit and isinstance(theirs, str) and theirs.strip() != unit:
                return False
    return True


def _range_label(rng: dict) -> str:
    """The lab's name for a range ("" when unlabelled: the ordinary reference range)."""
    kind = rng.get("type") if isinstance(rng.get("type"), dict) else {}
    names = [rng.get("text"), kind.get("text")]
    names += [c.get("display") or c.get("code") for c in as_list(kind.get("coding"))
              if isinstance(c, dict)]
    return next((_words(n) for n in names if isinstance(n, str) and n.strip()), "")


def _range_text(rng: dict) -> str:
    low, high = _bound(rng, "low"), _bound(rng, "high")
    side = rng.get("low") if isinstance(rng.get("low"), dict) else rng.get("high")
    unit = side.get("unit", "") if isinstance(side, dict) else ""
    span = f"{low:g}-{high:g}" if low is not None and high is not None else (
        f">= {low:g}" if low is not None else f"<= {high:g}")
    return f"{span} {unit}".rstrip()
