"""Alert fatigue, measured: the card log joined to the feedback by card uuid.

For the cards issued in a period, per rule (the card's topic code) and per finding key: cards
shown, cards suppressed as repeats (logged, never sent), accepted, overridden (with the count
per override reason code), no feedback, and the override rate = overridden / shown. A card
counts once, by the last feedback item received for it (a client may resend or revise). "No
feedback" is kept apart rather than read as accepted or overridden: many EHRs send no feedback
for a card that was merely read.

Beside the cards, distinct alerts: an EHR re-fires order-select on every change of the order
form, so one alert is issued as many cards, most of them without feedback. The cards shown with
one fingerprint (repeats.py: patient, user, finding, order and evidence) are one alert; a card
without one (data-unavailable, hooks other than order-select and order-sign) is an alert of its
own. An alert counts by the last feedback any of its cards received; alert override rate =
overridden alerts / alerts.

`html()` writes the same figures as one self-contained page: inline CSS and SVG, no script,
nothing fetched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape

from .knowledge import Knowledge
from .store import Store, timestamp

NO_CODE = "(comment only)"
COLOURS = {"accepted": "#2e7d32", "overridden": "#c62828", "no feedback": "#9e9e9e",
           "suppressed": "#90caf9"}


LastFeedback = tuple[int, str | None]  # feedback id (0: none) and its outcome


@dataclass
class Tally:
    shown: int = 0
    suppressed: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    # each alert shown (its fingerprint, else its card uuid) -> its last feedback
    alerts: dict[str, LastFeedback] = field(default_factory=dict)

    @property
    def unanswered(self) -> int:
        return self.shown - self.accepted - self.overridden

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.shown if self.shown else None

    @property
    def alerts_overridden(self) -> int:
        return sum(outcome == "overridden" for _, outcome in self.alerts.values())

    @property
    def alert_override_rate(self) -> float | None:
        return self.alerts_overridden / len(self.alerts) if self.alerts else None

    def add(self, row: dict) -> None:
        if not row["shown"]:
            self.suppressed += 1  # never sent, so it can have no feedback
            return
        self.shown += 1
        self._add_to_alert(row)
        if row["outcome"] == "accepted":
            self.accepted += 1
        elif row["outcome"] == "overridden":
            self.overridden += 1
            self.reasons[row["override_code"] or NO_CODE] += 1

    def _add_to_alert(self, row: dict) -> None:
        """The alert keeps the feedback received last on any of its cards: feedback on an
        earlier copy may come after a later copy's."""
        key = row["fingerprint"] or row["card"]
        last = (row["feedback_id"] or 0, row["outcome"])
        if key not in self.alerts or last[0] > self.alerts[key][0]:
            self.alerts[key] = last


@dataclass
class Report:
    period: str
    rules: dict[str, Tally]                 # rule -> tally
    findings: dict[tuple[str, str], Tally]  # (rule, finding key) -> tally
    total: Tally
    versions: list[str]                     # knowledge versions that issued these cards
    unmatched: int                          # feedback naming a card the log does not hold
    reason_names: Mapping[str, str] = field(default_factory=dict)  # code -> display


def override_reasons(knowledge: Knowledge) -> dict[str, str]:
    """Override reason code -> its display text, as the cards offer them."""
    return dict(knowledge.cards.override_reasons)


def bound(value: str, end: bool = False) -> str:
    """A --since/--until value as a store timestamp. A bare date is a whole day: --until
    2026-11-30 includes the 30th. A date-time without a zone is UTC."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return timestamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return timestamp(start + timedelta(days=1) if end else start)


def build(store: Store, since: str | None = None, until: str | None = None,
          reason_names: Mapping[str, str] | None = None) -> Report:
    """since/until: as given on the command line (see `bound`), or None for no limit;
    reason_names: the display text of override reason codes (`override_reasons`)."""
    low, high = (bound(since) if since else None), (bound(until, end=True) if until else None)
    rows = store.card_outcomes(low, high)
    rules: dict[str, Tally] = {}
    findings: dict[tuple[str, str], Tally] = {}
    total = Tally()
    for row in rows:
        for tally in (rules.setdefault(row["rule"], Tally()),
                      findings.setdefault((row["rule"], row["finding"]), Tally()), total):
            tally.add(row)
    period = f"{since or 'the first card'} to {until or 'now'}"
    return Report(period, dict(sorted(rules.items())), dict(sorted(findings.items())), total,
                  sorted({r["knowledge_version"] for r in rows}),
                  store.unmatched_feedback(low, high), dict(reason_names or {}))


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _reason(code: str, names: Mapping[str, str]) -> str:
    """'Display text [code]', or the code alone when the knowledge has no display for it (a
    client's own code, or the comment-only marker)."""
    return f"{names[code]} [{code}]" if code in names else code


def _reasons(tally: Tally, names: Mapping[str, str]) -> str:
    return ", ".join(f"{_reason(code, names)} {n}" for code, n in tally.reasons.most_common())


# -- text ---------------------------------------------------------------------------------

_COLUMNS = ("shown", "suppressed", "accepted", "overridden", "no feedback", "override rate",
            "alerts", "alert override rate")
_EXPLAINED = (  # the text's header lines; one paragraph in HTML
    "Override rate = overridden / shown; a card counts by its last feedback item.",
    "Alerts = distinct alerts shown: the order-select and order-sign cards with the same patient,",
    "user, finding, order and evidence (an order form re-fired) are one alert; any other card is",
    "an alert of its own. An alert counts by the last feedback any of its cards received.",
    "Alert override rate = overridden alerts / alerts.")


def _cells(tally: Tally) -> tuple[int | str, ...]:
    """A row's figures, in the order of _COLUMNS."""
    return (tally.shown, tally.suppressed, tally.accepted, tally.overridden, tally.unanswered,
            _rate(tally.override_rate), len(tally.alerts), _rate(tally.alert_override_rate))


def _line(label: str, tally: Tally) -> str:
    cells = [f"{c:>{len(name)}}" for c, name in zip(_cells(tally), _COLUMNS, strict=True)]
    return f"{label:<40} " + "  ".join(cells)


def text(report: Report) -> str:
    lines = [f"Cards issued from {report.period} (UTC).",
             f"Knowledge: {', '.join(report.versions) or '-'}", *_EXPLAINED, "",
             f"{'rule / finding':<40} " + "  ".join(_COLUMNS)]
    for rule, tally in report.rules.items():
        lines.append(_line(rule, tally))
        for (owner, key), item in report.findings.items():
            if owner == rule:
                lines.append(_line(f"  {key}", item))
                if item.reasons:
                    lines.append(f"      overridden for: {_reasons(item, report.reason_names)}")
    lines += [_line("all rules", report.total), ""]
    if not report.rules:
        lines.append("No cards were issued in this period.")
    if report.unmatched:
        lines.append(f"Feedback naming no logged card (not counted above): {report.unmatched}")
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------

_BAR, _GAP, _LABEL_W, _WIDTH = 22, 10, 300, 960


Segment = tuple[str, float, str]  # name, value, colour


def _svg(title: str, bars: list[tuple[str, list[Segment], str]], scale: float) -> str:
    """A horizontal bar chart: each bar a label, a stack of segments and an end note."""
    if not bars:
        return f'<p class="empty">{escape(title)}: nothing in this period.</p>'
    plot = _WIDTH - _LABEL_W - 200  # room for the end note
    height = len(bars) * (_BAR + _GAP) + _GAP
    parts = [f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {_WIDTH} {height}" '
             f'width="{_WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for row, (label, segments, note) in enumerate(bars):
        y = _GAP + row * (_BAR + _GAP)
        parts.append(f'<text x="{_LABEL_W - 8}" y="{y + _BAR * 0.7:.1f}" text-anchor="end">'
                     f"{escape(label)}</text>")
        x = float(_LABEL_W)
        for name, value, colour in segments:
            width = plot * value / scale if scale else 0
            if width > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_BAR}" '
                             f'fill="{colour}"><title>{escape(label)}: {escape(name)} '
                             f"{value:g}</title></rect>")
            x += width
        parts.append(f'<text x="{x + 6:.1f}" y="{y + _BAR * 0.7:.1f}">{escape(note)}</text>')
    return "\n".join([*parts, "</svg>"])


def _legend(names: list[str]) -> str:
    items = "".join(f'<span><i style="background:{COLOURS[n]}"></i>{escape(n)}</span>'
                    for n in names)
    return f'<p class="legend">{items}</p>'


def _outcome_chart(report: Report) -> str:
    bars = [(rule, [("accepted", t.accepted, COLOURS["accepted"]),
                    ("overridden", t.overridden, COLOURS["overridden"]),
                    ("no feedback", t.unanswered, COLOURS["no feedback"]),
                    ("suppressed", t.suppressed, COLOURS["suppressed"])],
             f"{t.shown} shown" + (f", {t.suppressed} suppressed" if t.suppressed else ""))
            for rule, t in report.rules.items()]
    scale = max((t.shown + t.suppressed for t in report.rules.values()), default=0)
    return _legend(list(COLOURS)) + _svg("Cards per rule, by outcome", bars, scale)


def _rate_chart(report: Report) -> str:
    bars = [(key, [("override rate %", round(100 * t.override_rate, 1), COLOURS["overridden"])],
             f"{_rate(t.override_rate)} of {t.shown}")
            for (_, key), t in report.findings.items() if t.override_rate is not None]
    return _svg("Override rate per finding", bars, 100.0)


def _reason_chart(report: Report) -> str:
    bars = [(code, [("overrides", n, COLOURS["overridden"])], str(n))  # the table has displays
            for code, n in report.total.reasons.most_common()]
    return _svg("Override reasons, all rules", bars, max(report.total.reasons.values(),
                                                         default=0))


def _row(label: str, tally: Tally, css: str, names: Mapping[str, str]) -> str:
    return (f'<tr class="{css}"><th scope="row">{escape(label)}</th>'
            + "".join(f"<td>{escape(str(c))}</td>" for c in _cells(tally))
            + f"<td>{escape(_reasons(tally, names))}</td></tr>")


def _table(report: Report) -> str:
    head = "".join(f'<th scope="col">{escape(c)}</th>'
                   for c in ("rule / finding", *_COLUMNS, "override reasons"))
    rows, names = [], report.reason_names
    for rule, tally in report.rules.items():
        rows.append(_row(rule, tally, "rule", names))
        rows += [_row(key, item, "finding", names) for (owner, key), item
                 in report.findings.items() if owner == rule]
    rows.append(_row("all rules", report.total, "total", names))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#212121;margin:24px;
max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin:0}.figures span{display:inline-block;margin:12px 24px 0 0}
.figures b{display:block;font-size:24px}
svg text{font-size:13px;fill:#212121}
.legend span{margin-right:16px}.legend i{display:inline-block;width:12px;height:12px;
margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;margin-top:8px}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}
th[scope=row],thead th:first-child,thead th:last-child,td:last-child{text-align:left}
th[scope=row]{white-space:nowrap}td:last-child{min-width:14em}
tr.rule th,tr.total th{font-weight:600}tr.finding th{font-weight:normal;padding-left:24px}
tr.total{border-top:2px solid #212121}.empty{color:#555}
"""


def html(report: Report, generated: datetime | None = None) -> str:
    generated = generated or datetime.now(UTC)
    total = report.total
    figures = "".join(f"<span><b>{escape(str(value))}</b>{escape(name)}</span>" for name, value in (
        ("cards shown", total.shown), ("suppressed as repeats", total.suppressed),
        ("overridden", total.overridden), ("override rate", _rate(total.override_rate)),
        ("alerts", len(total.alerts)), ("alert override rate", _rate(total.alert_override_rate))))
    notes = [] if not report.unmatched else [
        f"<p>{report.unmatched} feedback item(s) name no logged card and are not counted.</p>"]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Thiopurine CDS: alert report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Thiopurine CDS: cards and their outcomes</h1>",
        f'<p class="meta">Cards issued from {escape(report.period)} (UTC). Knowledge: '
        f"{escape(', '.join(report.versions) or '-')}. Generated {timestamp(generated)}.</p>",
        '<p class="meta">Suppressed cards were repeats of an order-select card and never'
        " sent.</p>", f'<p class="meta">{escape(" ".join(_EXPLAINED))}</p>',
        f'<div class="figures">{figures}</div>',
        "<h2>Cards per rule, by outcome</h2>", _outcome_chart(report),
        "<h2>Override rate per finding</h2>", _rate_chart(report),
        "<h2>Override reasons</h2>", _reason_chart(report),
        "<h2>Figures</h2>", _table(report), *notes, "</body></html>", ""])
