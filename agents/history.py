"""The campaign's history as the agent reads it: recent runs in detail, older ones compacted.

The prompt must stay bounded however long the campaign runs, yet show every idea already tried
so it is not tried again. Older runs are grouped by outcome with short descriptions; kept ones are
always listed; when the list outgrows OLDER_MAX_CHARS the oldest descriptions are counted instead.
"""

from __future__ import annotations

RECENT_RUNS = 10
DESCRIPTION_CHARS = 70
OLDER_MAX_CHARS = 6000
GROUPS = [
    ("kept", {"keep"}),
    ("discarded", {"discard"}),
    ("failed", {"crash", "timeout", "invalid"}),
    ("rejected", {"rejected"}),
    ("refused", {"refused"}),
]
IN_FLIGHT = {"training", "evaluating"}


def fmt_bpb(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def short(text: str | None, n: int = DESCRIPTION_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render(history: list[dict], best: dict | None) -> str:
    experiments = [h for h in history if h.get("kind", "experiment") in ("experiment", "baseline")]
    recent, older = experiments[-RECENT_RUNS:], experiments[:-RECENT_RUNS]
    lines = []
    if best:
        lines.append(
            f"Best so far: val_bpb {fmt_bpb(best['val_bpb'])} (run #{best['seq']}: "
            f"{short(best['description'], 120)}), {best.get('tok_per_sec') or 0:,.0f} tok/s."
        )
    if older:
        lines.append(f"\nOlder experiments ({len(older)}), grouped by outcome; do not repeat these ideas:")
        used = 0
        for title, statuses in GROUPS:
            items = [h for h in older if h["status"] in statuses]
            if not items:
                continue
            descriptions = list(dict.fromkeys(short(h["description"]) for h in items))
            if title != "kept":
                keep_from = len(descriptions)
                while keep_from > 0 and used + len("; ".join(descriptions[keep_from - 1 :])) < OLDER_MAX_CHARS:
                    keep_from -= 1
                shown, hidden = descriptions[keep_from:], keep_from
            else:
                shown, hidden = descriptions, 0
            text = "; ".join(shown)
            used += len(text)
            more = f" (and {hidden} earlier)" if hidden else ""
            lines.append(f"- {title} ({len(items)}){more}: {text}")
    if recent:
        lines.append(
            "\nRecent experiments, oldest first (delta is val_bpb minus the current best; negative is better):"
        )
        for h in recent:
            delta = f"{h['delta']:+.4f}" if h.get("delta") is not None else "-"
            lines.append(
                f"#{h['seq']} [{h['status']}] val_bpb {fmt_bpb(h.get('val_bpb'))} delta {delta}: "
                f"{short(h.get('description'), 160)}"
            )
            if h.get("decision_reason"):
                lines.append(f"    decision: {short(h['decision_reason'], 200)}")
    flying = [h for h in history if h.get("status") in IN_FLIGHT and h.get("kind") in ("experiment", "rebase")]
    if flying:  # --parallel: other candidates are being measured against the same champion right now
        lines.append(
            "\nIn flight now, against the same champion (propose something different): "
            + "; ".join(f"#{h['seq']} {short(h.get('description'))}" for h in flying)
        )
    return "\n".join(lines) if lines else "No experiments yet: this is the first proposal after the baseline."
