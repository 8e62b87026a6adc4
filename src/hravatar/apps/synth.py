"""``hravatar synth OUT``: write the built-in synthetic subject with ground truth."""

from __future__ import annotations

from hravatar.synth.subject import SynthConfig, synthesize


def synth(cfg: SynthConfig) -> int:
    """Render a synthetic talking head (open head model, procedural appearance, known lighting) and
    write it as a subject folder with ground-truth albedo / normal / mask maps and relit renders."""
    out = synthesize(cfg)
    print(f"synthetic subject written to {out}")
    print(f"train on it with: hravatar train {out}")
    return 0
