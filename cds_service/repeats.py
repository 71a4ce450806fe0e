"""Repeat suppression: a card already shown at `order-select` is not repeated at `order-sign`.

At order-select every card about a draft order is logged with a fingerprint: a keyed hash
(HMAC-SHA256 under the store's pseudonym key, so it reveals nothing) of the patient, the user,
the finding key, the draft order's content (the MedicationRequest as canonical JSON, keys
sorted, without `id` and `meta`, which an EHR may reassign between the two hooks) and a hash
of the finding's evidence lines, which carry the data the finding was made from (values, dates,
units, resource ids). At order-sign a card whose fingerprint was shown at order-select within
`Settings.repeat_window_minutes` is dropped from the response and logged as suppressed. A
changed dose, a new count or result, another user or another finding changes the fingerprint,
so the card is shown again.

Design choices:
- Off by default (as the PDDI-CDS guide's `filter-out-repeated-alerts` is): the service cannot
  know a card was displayed or acted on.
- A card whose suggestion was accepted (feedback) is shown again: the same draft at order-sign
  means the accepted change was not made.
- Critical cards are never suppressed. A select-time card may have been dismissed unread in a
  busy panel; repeating a critical card costs a click, missing one can cost a life-threatening
  myelosuppression. Only info and warning cards are candidates.
- Cards not about a draft order (data-unavailable) have no fingerprint and are always shown:
  they describe this request's data, not an order the user has already seen judged.
- Fail open: if the store cannot be read, nothing is suppressed (the caller shows every card).
- The request may switch suppression on or off, as the HL7 PDDI-CDS IG's configuration items
  do (request `extension`, keyed "pddi-configuration-items", an object of option code ->
  value; the IG's reference service reads the same shape):

      "extension": {"pddi-configuration-items": {"filter-out-repeated-alerts": false}}

  A boolean there wins; otherwise `Settings.suppress_repeats` decides. Discovery advertises the
  option on order-sign services in the IG's form (`CONFIGURATION_ITEM`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import orjson

from .config import Settings
from .engine import Result
from .findings import Finding
from .protocol import HookRequest
from .store import Store, timestamp

OPTION = "filter-out-repeated-alerts"
CONFIGURATION_KEY = "pddi-configuration-items"
CONFIGURATION_ITEM = {
    "code": OPTION, "type": "boolean", "name": "Filter out repeated alerts",
    "description": "true: a non-critical card already shown at order-select for the same draft"
                   " order, user and data is not repeated at order-sign; false: every card is"
                   " shown. Default: the deployment's setting."}
_FINGERPRINTED_HOOKS = ("order-select", "order-sign")
log = logging.getLogger("cds_service")


@dataclass(frozen=True)
class Issued:
    """A card the engine produced, and what became of it."""
    card: dict
    key: str                          # the finding key
    finding: Finding | None = None
    fingerprint: str | None = None
    repeat_of: str | None = None      # set: suppressed, it repeats this order-select card

    @property
    def shown(self) -> bool:
        return self.repeat_of is None


def requested(body: object, default: bool) -> bool:
    """The request's filter-out-repeated-alerts switch, or the deployment's default."""
    items = body.get("extension", {}).get(CONFIGURATION_KEY) if isinstance(body, dict) else None
    if not isinstance(items, dict) or OPTION not in items:
        return default
    if not isinstance(items[OPTION], bool):
        log.warning(orjson.dumps({"event": "bad-configuration-item", "item": OPTION,
                                  "message": "not a boolean: ignored"}).decode())
        return default
    return items[OPTION]


def fingerprint(store: Store, request: HookRequest, finding: Finding | None) -> str | None:
    if finding is None or finding.order is None:
        return None
    order = {k: v for k, v in finding.order.resource.items() if k not in ("id", "meta")}
    evidence = hashlib.sha256(orjson.dumps([[e.kind, e.values] for e in finding.evidence],
                                           option=orjson.OPT_SORT_KEYS)).hexdigest()
    content = [request.patient_id, request.user_id, finding.key, order, evidence]
    return store.keyed_hash(orjson.dumps(content, option=orjson.OPT_SORT_KEYS))


def unfiltered(result: Result) -> list[Issued]:
    """Each card with its finding: the engine renders one card per finding, in order. If that
    ever stops holding, the cards go unpaired rather than paired with the wrong finding."""
    if len(result.findings) != len(result.cards):
        log.warning('{"event": "cards-findings-mismatch"}')
        return [Issued(card, "unknown") for card in result.cards]
    return [Issued(c, f.key, f) for c, f in zip(result.cards, result.findings, strict=True)]


def plan(store: Store, request: HookRequest, body: object, result: Result, now: datetime,
         settings: Settings) -> list[Issued]:
    """Every card of `result`, fingerprinted, with order-sign repeats marked suppressed."""
    issued = unfiltered(result)
    hook = request.service.hook
    if hook not in _FINGERPRINTED_HOOKS:
        return issued
    issued = [replace(i, fingerprint=fingerprint(store, request, i.finding)) for i in issued]
    if hook != "order-sign" or not requested(body, settings.suppress_repeats):
        return issued
    candidates = [i.fingerprint for i in issued if i.fingerprint and _suppressible(i)]
    since = timestamp(now - timedelta(minutes=settings.repeat_window_minutes))
    earlier = {fingerprint: card for fingerprint, card in
               store.shown_at_select(candidates, since).items() if not _accepted(store, card)}
    return [replace(i, repeat_of=earlier[i.fingerprint])
            if i.fingerprint in earlier and _suppressible(i) else i for i in issued]


def _accepted(store: Store, card: str) -> bool:
    """A suggestion of the card was accepted: the user asked for a change, and an unchanged
    draft at order-sign (same fingerprint) means the change was not made, so it shows again."""
    return any(item["outcome"] == "accepted" for item in store.feedback(card))


def _suppressible(issued: Issued) -> bool:
    return issued.card.get("indicator") != "critical"
