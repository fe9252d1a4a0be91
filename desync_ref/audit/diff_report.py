"""What ``diff`` finds, independent of how it is printed (spec/diff.md § "Output").

A ``Finding`` is one line of the text output: where (a path for archives, a header field
or ``chunks`` for indexes), what, and the known casync/desync divergence it is, if any.
``Report`` gathers them with the summary; the command line prints text or JSON from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from desync_ref.audit.deviations import Deviation, Side


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # "feature flags", "chunk sizes", "./etc/passwd", ...
    text: str  # what differs, in words
    deviation: Deviation | None = None
    side: Side | None = None  # the side that behaves as desync, when deviation is set
    difference: bool = True  # False for notes (explanations) that are no difference

    def lines(self) -> list[str]:
        out = [f"{self.where}: {self.text}"]
        if self.deviation is not None and self.side is not None:
            out.append(f"  known: {self.deviation.describe(self.side)}")
        return out

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"where": self.where, "text": self.text,
                                  "difference": self.difference}
        if self.deviation is not None and self.side is not None:
            out["deviation"] = {"key": self.deviation.key, "side": self.side,
                                "text": self.deviation.describe(self.side)}
        return out


@dataclass(slots=True)
class Report:
    kind: str  # "index" or "archive"
    findings: list[Finding] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not any(f.difference for f in self.findings)

    def add(self, where: str, text: str, deviation: Deviation | None = None,
            side: Side | None = None, *, difference: bool = True) -> None:
        self.findings.append(Finding(where, text, deviation, side, difference))

    def lines(self) -> list[str]:
        return [line for f in self.findings for line in f.lines()] + self.summary

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "same": self.same,
                "findings": [f.as_json() for f in self.findings], "summary": self.summary}
