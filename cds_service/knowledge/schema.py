"""The typed schema of the knowledge files in cards/: one model per file, extra fields forbidden.

A model checks what one file can check on its own (types, ranges, a critical threshold below the
warning one); links between files are checked in `wiring.py`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Id = Annotated[str, StringConstraints(min_length=1)]
Code = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
PositiveNumber = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Sources = Annotated[list[Id], Field(min_length=1)]
Indicator = Literal["info", "warning", "critical"]
INDICATORS: tuple[str, ...] = ("info", "warning", "critical")
PHENOTYPES = ("normal", "intermediate", "possible_intermediate", "poor", "indeterminate",
              "intermediate_or_poor", "unknown")
Phenotype = Literal["normal", "intermediate", "possible_intermediate", "poor", "indeterminate",
                    "intermediate_or_poor", "unknown"]
_LOINC = re.compile(r"^(\d{1,7})-(\d)$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class File(Model):
    version: Id


def loinc_check_digit_ok(code: str) -> bool:
    """LOINC's mod-10 check digit catches typos such as 79713-8 for 79713-4."""
    match = _LOINC.match(code)
    if not match:
        return False
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(match.group(1))):
        total += sum(divmod(digit * 2, 10)) if i % 2 == 0 else digit
    return (10 - total % 10) % 10 == int(match.group(2))


# ---- sources.yaml -------------------------------------------------------------------------

class Source(Model):
    citation: Id
    url: str | None = None
    tag: Literal["V", "C", "U"]
    provenance: str | None = None   # internal note (e.g. which reference summary): never shown
    drugs: list[Id] = []            # a drug's own label: on a card about another drug it gives
                                    # way to that drug's label when the card cites both


class SourcesFile(File):
    sources: dict[Id, Source]


# ---- drugs.yaml ---------------------------------------------------------------------------

DrugClass = Literal["thiopurine", "xanthine-oxidase-inhibitor", "interacting",
                    "alkylating-agent"]
ORDERED_CLASSES = ("thiopurine", "xanthine-oxidase-inhibitor")


class DoseRange(Model):
    indication: Id | None = None     # a condition set of conditions.yaml; None: no known one
    range: tuple[PositiveNumber, PositiveNumber]
    label: Id
    new_start_only: bool = False
    source: Id | list[Id]

    @model_validator(mode="after")
    def _ordered(self) -> DoseRange:
        if self.range[0] >= self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        return self


class Interaction(Model):
    effect: Id
    finding: Id


class DrugSystems(Model):
    rxnorm: Id
    atc: Id
    snomed: Id


class Drug(Model):
    display: Id
    drug_class: DrugClass = Field(alias="class")
    xanthine_oxidase_substrate: bool = False
    allergy_group: str | None = None
    rxnorm_ingredient: list[Code] = []
    atc: list[Code] = []
    atc_prefixes: list[Code] = []
    snomed: list[Code] = []
    text: list[Code]
    products: dict[Code, PositiveNumber] = {}
    groups: list[Code] = []
    dose_step_mg: PositiveNumber | None = None
    dose_mg_kg_day: list[DoseRange] = []
    critical_above_mg_kg_day: PositiveNumber | None = None   # several times every labelled top
    interaction: Interaction | None = None
    source: Sources

    @model_validator(mode="after")
    def _complete(self) -> Drug:
        if self.drug_class in ORDERED_CLASSES and (not self.products or not self.dose_step_mg):
            raise ValueError(f"a {self.drug_class} needs products and dose_step_mg")
        ranges = self.dose_mg_kg_day
        if ranges and (ranges[-1].indication or any(r.indication is None for r in ranges[:-1])):
            raise ValueError("dose_mg_kg_day: the last entry, and only it, has no indication")
        return self


class DrugsFile(File):
    systems: DrugSystems
    drugs: dict[Id, Drug]


# ---- labs.yaml ----------------------------------------------------------------------------

NonNegative = Annotated[float, Field(ge=0)]


class FromPercent(Model):
    codes: Annotated[list[Code], Field(min_length=1)]
    of: Id                          # the analyte whose absolute count the % applies to
    source: Id


class Analyte(Model):
    display: Id
    codes: Annotated[list[Code], Field(min_length=1)]
    critical_below: NonNegative | None = None
    lower_limit: PositiveNumber
    itp_sensitive: bool
    infer_unit: dict[Literal["per_L9", "per_uL"], tuple[NonNegative, NonNegative]]
    from_percent: FromPercent | None = None
    source: Sources

    @model_validator(mode="after")
    def _thresholds(self) -> Analyte:
        if self.critical_below is not None and self.critical_below >= self.lower_limit:
            raise ValueError("critical_below must be below lower_limit")
        for scale, (low, high) in self.infer_unit.items():
            if low >= high:
                raise ValueError(f"infer_unit.{scale} must be [low, high] with low < high")
        scales = self.infer_unit
        if len(scales) == 2 and scales["per_L9"][1] >= scales["per_uL"][0]:
            # a unitless value both scales hold has two readings, one of them critical
            raise ValueError("infer_unit: per_L9 must end below where per_uL starts")
        return self


class Units(Model):
    source: Id | list[Id]
    factors: dict[Code, PositiveNumber]


class Itp(Model):
    bleeding_below: PositiveNumber
    severe_bleeding_below: PositiveNumber
    fall_fraction: Fraction
    source: Sources

    @model_validator(mode="after")
    def _ordered(self) -> Itp:
        if self.severe_bleeding_below >= self.bleeding_below:
            raise ValueError("severe_bleeding_below must be below bleeding_below")
        return self


class BodyWeight(Model):
    codes: Annotated[list[Code], Field(min_length=1)]
    max_age_days: Annotated[int, Field(gt=0)]
    units: dict[Code, PositiveNumber]
    source: Sources


class LiverEnzymes(Model):
    analytes: dict[Code, Id]
    uln_multiple: PositiveNumber
    critical_flags: list[Code]
    lookback_days: Annotated[int, Field(gt=0)]
    source: Sources


class MonitoringStep(Model):
    until_day: Annotated[int, Field(gt=0)] | None = None
    every_days: Annotated[int, Field(gt=0)]
    phase: Id


class Monitoring(Model):
    schedule: Annotated[list[MonitoringStep], Field(min_length=1)]
    grace_days: Annotated[int, Field(ge=0)]
    unknown_start_phase: Id       # how a card names the schedule when the start is unknown
    source: Sources

    @model_validator(mode="after")
    def _schedule(self) -> Monitoring:
        *bounded, last = self.schedule
        if last.until_day is not None or any(s.until_day is None for s in bounded):
            raise ValueError("schedule: only the last step is open-ended (no until_day)")
        days = [s.until_day for s in bounded]
        if days != sorted(set(days)):
            raise ValueError("schedule: until_day must increase")
        return self


class LabsFile(File):
    loinc: Id
    lookback_days: Annotated[int, Field(gt=0)]
    trend_fall_fraction: Fraction
    itp: Itp
    window_source: Sources
    analytes: dict[Id, Analyte]
    units: Units
    body_weight: BodyWeight
    liver_enzymes: LiverEnzymes
    monitoring: Monitoring


# ---- conditions.yaml ----------------------------------------------------------------------

class SystemCode(Model):
    system: Id
    code: Code


class SystemPrefix(Model):
    system: Id
    prefix: Code


class StatusObservation(Model):
    code: Code
    answers: Annotated[list[Code], Field(min_length=1)]


class ConditionSet(Model):
    display: Id
    codes: list[SystemCode] = []
    code_prefixes: list[SystemPrefix] = []
    words: list[Code] = []
    observation: StatusObservation | None = None
    source: Sources


class ConditionsFile(File):
    conditions: dict[Id, ConditionSet]


# ---- rules.yaml: card content ------------------------------------------------------------

class Suggestion(Model):
    kind: Literal["order-test", "reduce-dose", "remove-order"]
    label: Id
    fraction: Fraction | None = None
    because: Id | None = None  # reduce-dose: the reduction's name where several are combined
    test: Id | None = None
    of: Literal["order", "partner"] = "order"      # remove-order: which order of the finding

    @model_validator(mode="after")
    def _fields(self) -> Suggestion:
        if (self.kind == "order-test") != (self.test is not None):
            raise ValueError("an order-test suggestion, and only it, names a test")
        if (self.kind == "reduce-dose") != (self.because is not None):
            raise ValueError("a reduce-dose suggestion, and only it, says what it is 'because'")
        if self.fraction is not None and self.kind != "reduce-dose":
            raise ValueError("only a reduce-dose suggestion has a fraction")
        return self


class IfReduced(Model):
    max_fraction: Annotated[float, Field(gt=0, le=1)]
    finding: Id
    reason: Id                       # how the card names this reduction, e.g. "allopurinol (1/3)"


class Finding(Model):
    family: Id
    indicator: Indicator
    summary: Id
    recommendation: Id
    strength: Id
    references: list[Id] = []
    links: list[Id] = []
    suggestions: list[Suggestion] = []
    override: list[Id] = []
    if_reduced: IfReduced | None = None


class Link(Model):
    label: Id
    url: Annotated[str, StringConstraints(pattern=r"^https?://")]
    drugs: list[Id] = []            # as Source.drugs


class Family(Model):
    label: Id
    # absolute, or "{service}/..." for the service's own pages (its public base URL)
    url: Annotated[str, StringConstraints(pattern=r"^(https?://|\{service\}/)")]
    # drug labels (rules.yaml links with `drugs`): the card's source is the ordered drug's one
    drug_labels: list[Id] = []


class TestCode(Model):
    system: Id
    code: Code
    display: Id


class OrderableTest(Model):
    code: TestCode | None = None    # without a verified code, the test is ordered by name
    text: Id | None = None
    source: Id

    @model_validator(mode="after")
    def _named(self) -> OrderableTest:
        if self.code is None and self.text is None:
            raise ValueError("a test needs a code or a text")
        return self


TextName = Literal["active-order-change", "combined-reduction", "combined-label", "above-target",
                   "below-target", "no-lower-dose"]


class RulesFile(File):
    systems: dict[Literal["topic", "override"], Id]
    families: dict[Id, Family]
    links: dict[Id, Link]
    override_reasons: dict[Id, Id]
    evidence: dict[Id, Id]
    texts: dict[TextName, Id]
    findings: dict[Id, Finding]
    tests: dict[Id, OrderableTest]

    @model_validator(mode="after")
    def _all_texts(self) -> RulesFile:
        missing = sorted(set(get_args(TextName)) - set(self.texts))
        if missing:
            raise ValueError(f"texts: {missing} missing")
        return self


# ---- services.yaml ------------------------------------------------------------------------

class Service(Model):
    id: Id
    hook: Literal["order-select", "order-sign", "medication-prescribe", "patient-view"]
    title: Id
    description: Id
    usageRequirements: str | None = None  # noqa: N815 (the discovery field's name)
    prefetch: list[Id]
    rules: Annotated[list[Id], Field(min_length=1)]


class ServicesFile(File):
    prefetch: dict[Id, Id]
    fallbacks: dict[Id, Id] = {}  # key -> the query tried when the server refuses the key's
    services: Annotated[list[Service], Field(min_length=1)]


# ---- pgx.yaml -----------------------------------------------------------------------------

class PgxCode(Model):
    code: Code
    system: str | None = None     # LOINC unless named
    display: Id
    source: Id | list[Id]


class GeneCodes(Model):
    phenotype: list[PgxCode] = []
    genotype: list[PgxCode] = []
    activity: list[PgxCode] = []


class AlleleTable(Model):
    source: Id | list[Id]
    functions: dict[Annotated[str, StringConstraints(pattern=r"^\*[0-9A-Za-z]+$")], Id]


class Gene(Model):
    hgnc: Annotated[str, StringConstraints(pattern=r"^HGNC:\d+$")]
    source: Id | list[Id]
    codes: GeneCodes
    alleles: AlleleTable


class Answer(Model):
    code: Code
    display: Id
    phenotype: Phenotype
    source: Id | list[Id]


class PairRule(Model):
    functions: tuple[Id, Id]
    phenotype: Phenotype


class PairRules(Model):
    source: Id | list[Id]
    rules: Annotated[list[PairRule], Field(min_length=1)]

    @model_validator(mode="after")
    def _complete(self) -> PairRules:
        pairs = [frozenset(r.functions) for r in self.rules]
        if len(pairs) != len(set(pairs)):
            raise ValueError("a function pair is listed twice")
        functions = sorted(frozenset().union(*pairs))
        gaps = [(a, b) for i, a in enumerate(functions) for b in functions[i:]
                if frozenset((a, b)) not in pairs]
        if gaps:
            raise ValueError(f"no phenotype for the function pairs {gaps}")
        return self


class Activity(Model):
    source: Id | list[Id]
    poor_below: Fraction
    intermediate_from: Fraction
    interpretation_codes: dict[Id, Phenotype]
    interpretation_text: dict[Id, Phenotype]
    words: dict[Id, Phenotype]
    range_text: dict[Id, Phenotype]

    @model_validator(mode="after")
    def _ordered(self) -> Activity:
        if self.poor_below > self.intermediate_from:
            raise ValueError("poor_below must not be above intermediate_from")
        return self


class LadderMatch(Model):
    """Which gene results a ladder row needs: among `genes` (default every gene), `require`
    any or all of them to have one of `phenotypes`; and, when given, the drug ordered and
    whether it is given for a malignancy (the `malignancy` condition set)."""
    phenotypes: Annotated[list[Phenotype], Field(min_length=1)]
    genes: list[Id] = []
    require: Literal["any", "all"] = "any"
    drugs: list[Id] = []
    malignant: bool | None = None


class LadderRow(Model):
    finding: Id
    when: LadderMatch


class PgxSystems(Model):
    loinc: Id
    hgnc: Annotated[list[Id], Field(min_length=1)]
    interpretation: Id
    source: Id | list[Id]


class Phenotypes(Model):
    source: Id | list[Id]
    labels: dict[Phenotype, Id]

    @model_validator(mode="after")
    def _every_label(self) -> Phenotypes:
        if set(self.labels) != set(PHENOTYPES):
            raise ValueError(f"labels must name exactly {PHENOTYPES}")
        return self


class PhenotypeText(Model):
    source: Id | list[Id]
    terms: dict[Id, Phenotype]


class Components(Model):
    gene_studied: PgxCode
    medication_assessed: PgxCode


class PgxFile(File):
    systems: PgxSystems
    phenotypes: Phenotypes
    genes: Annotated[dict[Id, Gene], Field(min_length=1)]
    generic_codes: GeneCodes
    components: Components
    answers: list[Answer]
    phenotype_text: PhenotypeText
    pair_rules: PairRules
    activity: Activity
    ladder: Annotated[list[LadderRow], Field(min_length=1)]
