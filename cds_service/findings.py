"""What a rule concludes, as values: the card's text is filled from these by `cards.py`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .facts.orders import Order


@dataclass(frozen=True)
class Evidence:
    """One line of a card's evidence: a template in cards/rules.yaml `evidence`, and its values."""
    kind: str
    values: Mapping[str, object]


@dataclass(frozen=True)
class Finding:
    key: str                                  # a finding in cards/rules.yaml
    order: Order | None                       # the order the card is about
    values: Mapping[str, object] = field(default_factory=dict)
    evidence: tuple[Evidence, ...] = ()
    target: Order | None = None               # the order a dose suggestion changes, if not `order`
    partner: Order | None = None              # the other order of an interaction
