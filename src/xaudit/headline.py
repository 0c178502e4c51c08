"""The answer block's sentences, read from an audits summary: the verdict's headline, the
negative controls in one sentence, and what would decide the methods still open. The report's
first screen and the CLI's closing block both say these, so they are written once, here.
The controls are the ones the summary lists (``audits["controls"]``)."""

from __future__ import annotations


def headline(audits: dict) -> str:
    """The verdict's first sentence: what to trust, what not."""
    text = str(audits.get("verdict") or "")
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def controls_sentence(audits: dict) -> tuple[str, bool]:
    """The controls in one sentence, and whether it is the alarm (a control was trusted)."""
    states = audits.get("states") or {}
    controls = [m for m in audits.get("controls") or [] if m in states]
    if not controls:
        return "", False
    fooled = [m for m in controls if states[m] == "trusted"]
    if fooled:
        return (f"Warning: {', '.join(fooled)} passed every check: on this data the audits "
                "cannot tell a map that ignores the model from an explanation.", True)
    rejected = sum(states[m] == "do not trust" for m in controls)
    how = ("all rejected" if rejected == len(controls)
           else f"{rejected} rejected, {len(controls) - rejected} undecided")
    return f"Negative controls: none of {len(controls)} trusted, as it must be ({how}).", False


def open_sentence(audits: dict) -> str | None:
    """What would decide the methods still open: images, time and the command."""
    controls = set(audits.get("controls") or [])
    open_ = {m: e for m, e in (audits.get("undecided") or {}).items() if m not in controls}
    if not open_:
        return None
    need = max((e.get("images_to_decide") or 0) for e in open_.values())
    seconds = sum(e.get("estimated_seconds") or 0 for e in open_.values())
    command = next((e["command"] for e in open_.values() if e.get("command")), "")
    return (f"{len(open_)} method(s) undecided: about {need} images would decide them"
            + (f", about {max(1, round(seconds / 60))} min" if seconds else "")
            + (f" — run {command}" if command else "") + ".")
