"""Clinical knowledge and card content, loaded from cards/*.yaml and checked once at start-up.

Everything an informaticist may change (codes, thresholds, windows, card text, links) lives in
the YAML files. `load_knowledge` validates each file against its schema (`schema.py`), checks
every link between files and with the rules' declarations (`wiring.py`), and builds the lookup
tables the engine uses. Any problem stops the start with one message naming file, key and
problem.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml
from pydantic import ValidationError

from ..errors import KnowledgeError
from ..fhir_read import unit_key
from . import schema

_HERE = Path(__file__).resolve().parent.parent
# Installed, the knowledge ships as cds_service/knowledge_data; in a checkout it is cards/.
_INSTALLED = _HERE / "knowledge_data"
DEFAULT_DIR = _INSTALLED if _INSTALLED.is_dir() else _HERE.parent / "cards"
FILES = {"sources": schema.SourcesFile, "drugs": schema.DrugsFile, "labs": schema.LabsFile,
         "conditions": schema.ConditionsFile, "rules": schema.RulesFile,
         "pgx": schema.PgxFile, "services": schema.ServicesFile}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VALUE_SET = re.compile(r"\{codes:([a-z0-9-]+)\}")


class PgxCode(NamedTuple):
    system: str
    kind: str                 # phenotype | genotype | activity
    genes: frozenset[str]     # empty: a generic code that may carry any gene's result


@dataclass(frozen=True)
class Pgx:
    """pgx.yaml with the lookup tables the result reader needs."""
    spec: schema.PgxFile
    codes: dict[str, PgxCode]
    hgnc: dict[str, str]                          # HGNC id -> gene symbol
    alleles: dict[str, dict[str, str]]            # gene -> star allele -> function
    pairs: dict[frozenset[str], str]              # function pair -> phenotype
    answers: dict[str, str]                       # LA code -> phenotype

    @property
    def genes(self) -> tuple[str, ...]:
        return tuple(self.spec.genes)


@dataclass(frozen=True)
class ConditionIndex:
    """Every condition set's codes, code prefixes and words, for matching a concept once."""
    codes: dict[tuple[str, str], tuple[str, ...]]         # (system, code) -> set names
    prefixes: tuple[tuple[str, str, str], ...]           # (system, prefix, set name)
    words: re.Pattern | None                             # any set's word, case-insensitive
    word_sets: dict[str, tuple[str, ...]]                # lower-case word -> set names


def _condition_index(conditions: dict[str, schema.ConditionSet]) -> ConditionIndex:
    codes: dict[tuple[str, str], list[str]] = {}
    words: dict[str, list[str]] = {}
    prefixes = []
    for name, spec in conditions.items():
        for code in spec.codes:
            codes.setdefault((code.system, code.code), []).append(name)
        prefixes += [(p.system, p.prefix, name) for p in spec.code_prefixes]
        for word in spec.words:
            words.setdefault(word.lower(), []).append(name)
    pattern = re.compile("|".join(map(re.escape, sorted(words, key=len, reverse=True)))
                         ) if words else None
    return ConditionIndex({k: tuple(v) for k, v in codes.items()}, tuple(prefixes), pattern,
                          {k: tuple(v) for k, v in words.items()})


@dataclass(frozen=True)
class Knowledge:
    version: str                                   # newest file version + content hash
    sources: dict[str, schema.Source]
    drugs: dict[str, schema.Drug]
    drug_systems: schema.DrugSystems
    drug_codes: dict[tuple[str, str], str]         # (system, code) -> drug
    drug_prefixes: dict[str, tuple[tuple[str, str], ...]]  # system -> (code prefix, drug): ATC
    drug_pattern: re.Pattern                       # every drug name as a whole word
    drug_by_word: dict[str, str]
    labs: schema.LabsFile
    analyte_by_code: dict[str, str]
    conditions: dict[str, schema.ConditionSet]
    condition_index: ConditionIndex
    cards: schema.RulesFile
    pgx: Pgx
    services: dict[str, schema.Service]
    prefetch: dict[str, str]                       # key -> query, value sets expanded
    fallbacks: dict[str, str]                      # key -> query when the server refuses it
    directory: Path

    def queries(self, service: str) -> dict[str, str]:
        """A service's prefetch templates by key, as discovery advertises them."""
        return {key: self.prefetch[key] for key in self.services[service].prefetch}


def _read(directory: Path, name: str) -> tuple[dict, bytes]:
    path = directory / f"{name}.yaml"
    try:
        raw = path.read_bytes()
        data = yaml.load(raw, Loader=_LOADER)
    except (OSError, yaml.YAMLError) as error:
        raise KnowledgeError(f"{path}: {error}") from error
    if not isinstance(data, dict):
        raise KnowledgeError(f"{path}: a mapping is required at the top level")
    return data, raw


def _validated(name: str, data: dict) -> schema.File:
    try:
        return FILES[name].model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise KnowledgeError(f"{name}.yaml: {where}: {first['msg']}{more}") from None


def _drug_indexes(drugs: schema.DrugsFile) -> tuple[dict, dict, re.Pattern, dict]:
    systems = drugs.systems
    codes: dict[tuple[str, str], str] = {}
    prefixes: list[tuple[str, str]] = []
    words: dict[str, str] = {}
    for name, drug in drugs.drugs.items():
        entries = [(systems.rxnorm, c) for c in [*drug.rxnorm_ingredient, *drug.products,
                                                  *drug.groups]]
        entries += [(systems.atc, c) for c in drug.atc] + [(systems.snomed, c)
                                                           for c in drug.snomed]
        for key in entries:
            if codes.setdefault(key, name) != name:
                raise KnowledgeError(f"drugs.yaml: drugs.{name}: code {key[1]} already belongs"
                                     f" to {codes[key]}")
        prefixes += [(p, name) for p in drug.atc_prefixes]
        for word in drug.text:
            if words.setdefault(word.lower(), name) != name:
                raise KnowledgeError(f"drugs.yaml: drugs.{name}: name '{word}' already belongs"
                                     f" to {words[word.lower()]}")
    # Longest names first, so "6-mercaptopurine" wins over "mercaptopurine".
    names = sorted(words, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")
    return codes, {systems.atc: tuple(prefixes)}, pattern, words


def _pgx(spec: schema.PgxFile) -> Pgx:
    loinc = spec.systems.loinc
    codes: dict[str, PgxCode] = {}

    def add(entries: schema.GeneCodes, genes: frozenset[str], where: str) -> None:
        for kind in ("phenotype", "genotype", "activity"):
            for entry in getattr(entries, kind):
                system = entry.system or loinc
                if system == loinc and not schema.loinc_check_digit_ok(entry.code):
                    raise KnowledgeError(f"pgx.yaml: {where}.{kind}: LOINC {entry.code} fails"
                                         " its check digit")
                old = codes.get(entry.code)
                if old and (old.kind != kind or old.system != system or not old.genes
                            or not genes):
                    raise KnowledgeError(f"pgx.yaml: {where}.{kind}: code {entry.code} is"
                                         " listed with another meaning")
                codes[entry.code] = PgxCode(system, kind, genes | (old.genes if old else
                                                                   frozenset()))

    hgnc, alleles = {}, {}
    pairs = {frozenset(r.functions): r.phenotype for r in spec.pair_rules.rules}
    functions = frozenset().union(*pairs)
    for gene, entry in spec.genes.items():
        if entry.hgnc in hgnc:
            raise KnowledgeError(f"pgx.yaml: genes.{gene}.hgnc {entry.hgnc} is repeated")
        hgnc[entry.hgnc] = gene
        add(entry.codes, frozenset({gene}), f"genes.{gene}.codes")
        for allele, function in entry.alleles.functions.items():
            if function not in functions:
                raise KnowledgeError(f"pgx.yaml: genes.{gene}.alleles: {allele} has function"
                                     f" '{function}', which no pair rule covers")
        alleles[gene] = {a.upper(): f for a, f in entry.alleles.functions.items()}
    add(spec.generic_codes, frozenset(), "generic_codes")
    for name in ("gene_studied", "medication_assessed"):
        code = getattr(spec.components, name).code
        if not schema.loinc_check_digit_ok(code):
            raise KnowledgeError(f"pgx.yaml: components.{name}: LOINC {code} fails its check"
                                 " digit")
    for i, row in enumerate(spec.ladder):
        unknown = set(row.when.genes) - set(spec.genes)
        if unknown:
            raise KnowledgeError(f"pgx.yaml: ladder.{i}: unknown gene(s) {sorted(unknown)}")
        if row.when.drugs and row.when.drugs != [d.lower() for d in row.when.drugs]:
            raise KnowledgeError(f"pgx.yaml: ladder.{i}: drugs are written in lower case")
    return Pgx(spec, codes, hgnc, alleles, pairs, {a.code: a.phenotype for a in spec.answers})


def _expanded(queries: dict[str, str], value_sets: dict[str, list[str]]) -> dict[str, str]:
    def expand(match: re.Match) -> str:
        if match.group(1) not in value_sets:
            raise KnowledgeError(f"services.yaml: unknown value set {match.group(1)}")
        return ",".join(value_sets[match.group(1)])
    return {key: _VALUE_SET.sub(expand, query) for key, query in queries.items()}


def _value_sets(drug_codes: dict, drugs: schema.DrugsFile, analyte_by_code: dict, pgx: Pgx,
                labs: schema.LabsFile, conditions: dict[str, schema.ConditionSet]
                ) -> dict[str, list[str]]:
    rxnorm = drugs.systems.rxnorm
    status = [c.observation.code for c in conditions.values() if c.observation]
    return {
        "blood-counts": sorted(analyte_by_code), "pgx": sorted(pgx.codes),
        "body-weight": list(labs.body_weight.codes), "liver": sorted(labs.liver_enzymes.analytes),
        "pregnancy-status": status,
        "alkylating": sorted(c for (_, c), d in drug_codes.items() if d == "alkylating-agent"),
        "thiopurines": sorted(c for (system, c), d in drug_codes.items()
                              if drugs.drugs[d].drug_class == "thiopurine"
                              and system == rxnorm),
    }


def _version(files: dict[str, schema.File], raw: dict[str, bytes]) -> str:
    """The newest file version plus a hash of every file's bytes: an edit without a version
    bump still shows."""
    digest = hashlib.sha256()
    for name in sorted(raw):
        digest.update(name.encode() + b"\0" + raw[name] + b"\0")
    return f"{max(f.version for f in files.values())}+{digest.hexdigest()[:12]}"


def load_knowledge(directory: Path | str = DEFAULT_DIR) -> Knowledge:
    from .wiring import check_wiring  # it reads the rules' declarations, which import this

    directory = Path(directory)
    read = {name: _read(directory, name) for name in FILES}
    files = {name: _validated(name, data) for name, (data, _) in read.items()}
    drugs, labs, pgx_spec = files["drugs"], files["labs"], files["pgx"]
    drug_codes, prefixes, pattern, words = _drug_indexes(drugs)
    analyte_by_code: dict[str, str] = {}
    for name, analyte in labs.analytes.items():
        for code in analyte.codes:
            if analyte_by_code.setdefault(code, name) != name:
                raise KnowledgeError(f"labs.yaml: analytes.{name}: code {code} already belongs"
                                     f" to {analyte_by_code[code]}")
    for unit in labs.units.factors:
        if unit_key(unit) != unit:
            raise KnowledgeError(f"labs.yaml: units.factors: write '{unit}' as"
                                 f" '{unit_key(unit)}' (lower case, no blanks or dots)")
    for name, analyte in labs.analytes.items():
        derived = analyte.from_percent
        if derived and (derived.of not in labs.analytes or any(
                c in analyte_by_code for c in derived.codes)):
            raise KnowledgeError(f"labs.yaml: analytes.{name}.from_percent: 'of' must name an"
                                 " analyte, and its codes must not be absolute-count codes")
    pgx = _pgx(pgx_spec)
    conditions = files["conditions"].conditions
    value_sets = _value_sets(drug_codes, drugs, analyte_by_code, pgx, labs, conditions)
    knowledge = Knowledge(
        version=_version(files, {n: raw for n, (_, raw) in read.items()}),
        sources=files["sources"].sources, drugs=drugs.drugs, drug_systems=drugs.systems,
        drug_codes=drug_codes,
        drug_prefixes=prefixes, drug_pattern=pattern, drug_by_word=words, labs=labs,
        analyte_by_code=analyte_by_code, conditions=conditions,
        condition_index=_condition_index(conditions), cards=files["rules"],
        pgx=pgx, services={s.id: s for s in files["services"].services},
        prefetch=_expanded(files["services"].prefetch, value_sets),
        fallbacks=_expanded(files["services"].fallbacks, value_sets),
        directory=directory,
    )
    check_wiring(knowledge, files)
    return knowledge
