"""The summary of ``hravatar batch``: ``OUT/batch.json`` and ``OUT/batch.html``.

``batch.json``::

    {"run_id", "started", "wall_seconds", "mode" ("local" | "cluster ADDR"), "nodes": [{node_id, node_ip,
     host, cpus, gpus}], "stages": [...], "cpus_per_job", "gpus_per_job", "max_retries", "config",
     "ok": n, "failed": [names],
     "subjects": [{"name", "input", "kind" ("video" | "subject"), "dir", "status" ("done" | "failed" |
                   "running"), "error" (first failing stage's one-line error or null),
                   "psnr", "ssim", "lpips", "points", "thumbnail" (path relative to OUT or null),
                   "stages": {stage: {"status", "seconds", "attempt", "node": {node_id, node_ip, host, pid},
                                      "error", ...stage details (points, resumed_from, psnr, ...)}}}]}

Stage status: ``done`` (ran now), ``skipped`` (outputs already there), ``input`` (preprocess of a
subject-folder input), ``failed``, ``not run`` (an earlier stage failed), ``pending``, or
``not selected`` (left out by ``--stages``). Both files are rewritten atomically after every
finished stage, so they show the progress of a running batch.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
import uuid
from pathlib import Path
from typing import Any

from hravatar.io.atomic import atomic_write_text

_COLORS = {"done": "#d8f5d8", "skipped": "#e4eefc", "input": "#eeeeee", "failed": "#f9d6d5", "not run": "#f3e9d2",
           "pending": "#ffffff", "not selected": "#f6f6f6"}


class Summary:
    """The batch's state: one record per subject and stage; :meth:`write` saves JSON and HTML."""

    def __init__(self, out: Path, jobs: list[Any], all_stages: list[str], stages: list[str],
                 meta: dict[str, Any]) -> None:
        self.out = Path(out)
        self.all_stages = list(all_stages)
        self.stages = list(stages)
        self.meta: dict[str, Any] = {"run_id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "wall_seconds": None, "stages": list(stages), **meta}
        self.subjects: list[dict[str, Any]] = []
        for j in jobs:
            rec = {**dataclasses.asdict(j), "status": "running", "error": None, "psnr": None, "ssim": None,
                   "lpips": None, "points": None, "thumbnail": None,
                   "stages": {s: {"status": "pending" if s in stages else "not selected"} for s in all_stages}}
            self.subjects.append(rec)
        self._by_name = {r["name"]: r for r in self.subjects}

    def status(self, name: str, stage: str) -> str | None:
        """The recorded status of ``stage`` of subject ``name`` (``None`` while pending)."""
        st = self._by_name[name]["stages"][stage]["status"]
        return None if st == "pending" else st

    def record(self, name: str, stage: str, result: dict[str, Any]) -> None:
        """Store a stage result (what :func:`hravatar.apps.batch.run_stage` returned)."""
        rec = self._by_name[name]
        rec["stages"][stage] = {k: v for k, v in result.items() if k != "stage"}
        if result.get("status") == "failed" and rec["error"] is None:
            rec["error"] = result.get("error")
        for k in ("psnr", "ssim", "lpips", "points"):
            if result.get(k) is not None:
                rec[k] = result[k]
        thumb = Path(rec["dir"]) / "thumbnail.png"
        if thumb.is_file():
            try:
                rec["thumbnail"] = str(thumb.relative_to(self.out))
            except ValueError:
                rec["thumbnail"] = str(thumb)
        states = [rec["stages"][s]["status"] for s in self.stages]
        if any(s in ("failed", "not run") for s in states):
            rec["status"] = "failed"
        elif "pending" not in states:
            rec["status"] = "done"

    def failed(self) -> list[str]:
        """Names of the subjects with a failed stage (or a stage that never ran)."""
        return [r["name"] for r in self.subjects if r["status"] != "done"]

    def to_dict(self) -> dict[str, Any]:
        done = [r for r in self.subjects if r["status"] == "done"]
        return {**self.meta, "ok": len(done), "failed": [r["name"] for r in self.subjects if r["status"] == "failed"],
                "subjects": self.subjects}

    def write(self) -> None:
        """Write ``OUT/batch.json`` and ``OUT/batch.html`` atomically."""
        d = self.to_dict()
        atomic_write_text(self.out / "batch.json", json.dumps(d, indent=1, default=str) + "\n")
        atomic_write_text(self.out / "batch.html", render_html(d))


def _num(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _stage_cell(st: dict[str, Any]) -> str:
    status = st.get("status", "pending")
    lines = [f"<b>{html.escape(status)}</b>"]
    if st.get("seconds") is not None and status not in ("not run", "pending", "not selected"):
        lines.append(f"{st['seconds']:.1f} s")
    node = st.get("node") or {}
    if node.get("node_id") and status != "not run":
        lines.append(f"<span class=n>{html.escape(str(node.get('node_ip')))} {html.escape(node['node_id'][:8])}</span>")
    if (st.get("attempt") or 1) > 1:
        lines.append(f"attempt {st['attempt']}")
    if st.get("resumed_from") is not None:
        lines.append(f"resumed at it. {st['resumed_from']}")
    return f'<td style="background:{_COLORS.get(status, "#fff")}">{"<br>".join(lines)}</td>'


def render_html(d: dict[str, Any]) -> str:
    """The summary page: a table of subjects x stages (status, time, node) with metrics and thumbnails."""
    stages = [s for s in ("preprocess", "train", "evaluate", "render")]
    head = "".join(f"<th>{s}</th>" for s in stages)
    rows = []
    for r in d["subjects"]:
        thumb = f'<img src="{html.escape(r["thumbnail"])}" alt="">' if r.get("thumbnail") else ""
        cells = "".join(_stage_cell(r["stages"].get(s, {})) for s in stages)
        rows.append(
            f"<tr><td>{thumb}</td><td><b>{html.escape(r['name'])}</b><br><span class=n>{html.escape(r['kind'])}: "
            f"{html.escape(r['input'])}</span></td><td class={html.escape(r['status'])}>{html.escape(r['status'])}"
            f"</td>{cells}<td>{_num(r.get('psnr'), '.2f')}</td><td>{_num(r.get('ssim'), '.4f')}</td>"
            f"<td>{_num(r.get('lpips'), '.4f')}</td><td>{_num(r.get('points'), 'd')}</td>"
            f"<td class=err>{html.escape(r.get('error') or '')}</td></tr>")
    nodes = ", ".join(f"{html.escape(str(n.get('node_ip')))} {html.escape(str(n.get('node_id', ''))[:8])} "
                      f"({n.get('cpus', 0):g} CPU, {n.get('gpus', 0):g} GPU)" for n in d.get("nodes", []))
    wall = d.get("wall_seconds")
    failed = html.escape(", ".join(d.get("failed", [])) or "none")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hravatar batch</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f0f0f0; }}
img {{ width: 96px; height: 96px; object-fit: cover; }}
.n {{ color: #666; font-size: 12px; }}
.err {{ color: #a00; max-width: 28em; font-family: monospace; font-size: 12px; }}
.failed {{ color: #a00; font-weight: bold; }} .done {{ color: #070; font-weight: bold; }}
</style></head><body>
<h1>hravatar batch</h1>
<p>{d.get('ok', 0)} of {len(d['subjects'])} subject(s) done; failed: {failed}.
Started {html.escape(str(d.get('started')))}, wall time {'running' if wall is None else f'{wall:.0f} s'};
Ray {html.escape(str(d.get('mode', '')))}: {nodes}; {d.get('cpus_per_job', 0):g} CPU and
{d.get('gpus_per_job', 0):g} GPU per task, up to {d.get('max_retries', 0)} retries.</p>
<table><tr><th></th><th>subject</th><th>status</th>{head}<th>PSNR</th><th>SSIM</th><th>LPIPS</th><th>points</th>
<th>error</th></tr>
{chr(10).join(rows)}
</table>
<p class=n>Stage cells: status, time, node (IP and Ray node id), attempt when Ray retried the task.
Metrics: test frames of each subject (<code>avatar/eval/metrics.json</code>). Machine-readable: batch.json.</p>
</body></html>
"""
