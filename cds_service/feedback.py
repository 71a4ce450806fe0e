"""CDS Hooks 2.0 feedback: validate every item, then store them all durably, or refuse."""

from __future__ import annotations

from datetime import datetime

from .errors import CDSError

OUTCOMES = ("accepted", "overridden")


def _fail(index: int, problem: str) -> CDSError:
    return CDSError(400, f"feedback[{index}]: {problem}")


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _timestamp(value: object) -> bool:
    if not _nonempty(value) or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _check_override(index: int, reason: object) -> None:
    if not isinstance(reason, dict):
        raise _fail(index, "overrideReason must be an object")
    coding, comment = reason.get("reason"), reason.get("userComment")
    if coding is None and comment is None:
        raise _fail(index, "overrideReason needs a reason or a userComment")
    # The sandbox sends {code, system} without display: accepted.
    if coding is not None and not (isinstance(coding, dict) and _nonempty(coding.get("code"))
                                   and all(isinstance(coding.get(k, ""), str)
                                           for k in ("system", "display"))):
        raise _fail(index, "overrideReason.reason must be a Coding with a code")
    if comment is not None and not _nonempty(comment):
        raise _fail(index, "overrideReason.userComment must be a non-empty string")


def _check_item(index: int, item: object) -> dict:
    if not isinstance(item, dict):
        raise _fail(index, "must be an object")
    if not _nonempty(item.get("card")):
        raise _fail(index, "card (the card's uuid) is required")
    if item.get("outcome") not in OUTCOMES:
        raise _fail(index, f"outcome must be one of {', '.join(OUTCOMES)}")
    if not _timestamp(item.get("outcomeTimestamp")):
        raise _fail(index, "outcomeTimestamp must be an ISO 8601 date-time with a time zone")
    accepted = item.get("acceptedSuggestions")
    if item["outcome"] == "accepted" and not accepted:
        raise _fail(index, "acceptedSuggestions is required when the outcome is accepted")
    if accepted is not None and not (isinstance(accepted, list) and all(
            isinstance(s, dict) and _nonempty(s.get("id")) for s in accepted)):
        raise _fail(index, "acceptedSuggestions must be an array of {id}")
    if "overrideReason" in item:
        _check_override(index, item["overrideReason"])
    return item


def parse_feedback(body: object) -> list[dict]:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise CDSError(400, "the body must be an object with a 'feedback' array")
    if not body["feedback"]:
        raise CDSError(400, "feedback: at least one item is required")
    return [_check_item(i, item) for i, item in enumerate(body["feedback"])]
