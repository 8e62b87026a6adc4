"""A self-contained HTML report: sections of tables, image strips and figures, images embedded.

Every image is embedded as a base64 ``data:`` URI (PNG, or JPEG for large photos), so the single
``.html`` file opens in any browser with no other file next to it. The same content (minus the
images) is written as JSON.

Example::

    rep = Report("Demo")
    rep.section("Metrics")
    rep.table([{"metric": "PSNR", "value": 31.2}])
    rep.image_rows([("frame 0", [("GT", gt), ("ours", pred)])])
    rep.write("out/report.html", json_path="out/report.json", data={"psnr": 31.2})
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hravatar.io.atomic import atomic_write_text

ImageLike = Any  # numpy [H,W,C] / [H,W] float in [0,1] or uint8, a torch tensor, or encoded PNG/JPEG bytes


def to_uint8(image: ImageLike) -> np.ndarray:
    """Image ``[H,W]`` or ``[H,W,1|3|4]`` (float in [0,1] or uint8, numpy or torch) -> uint8 ``[H,W,3|4]``."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected an image [H,W,C], got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    if a.dtype != np.uint8:
        a = np.nan_to_num(a.astype(np.float32), nan=0.0)
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def encode_image(image: ImageLike, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode an image as PNG or JPEG bytes (bytes input is returned unchanged)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    from PIL import Image

    a = to_uint8(image)
    im = Image.fromarray(a)
    buf = io.BytesIO()
    if fmt.lower() in ("jpg", "jpeg"):
        im.convert("RGB").save(buf, format="JPEG", quality=quality)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(image: ImageLike, fmt: str = "png") -> str:
    """``data:image/...;base64,...`` of an image (bytes are sniffed for PNG / JPEG)."""
    raw = encode_image(image, fmt)
    mime = "image/png" if raw[:4] == b"\x89PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.2f}"
    return str(v)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;
color:#222;background:#fafafa;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.sub{color:#666;margin-top:0}
table.t{border-collapse:collapse;margin:8px 0 16px 0;background:#fff}
table.t th,table.t td{border:1px solid #ccc;padding:4px 10px;text-align:right}
table.t th{background:#eee} table.t td:first-child,table.t th:first-child{text-align:left}
.strip{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start;margin:4px 0}
.cell{text-align:center;font-size:12px;color:#444}
.cell img{display:block;image-rendering:auto;border:1px solid #ccc;background:#000}
.rowlabel{writing-mode:vertical-rl;transform:rotate(180deg);font-size:12px;color:#444;text-align:center;
align-self:center;min-width:16px}
.note{color:#555;font-size:14px;max-width:1000px}
figure{margin:8px 0} figcaption{font-size:13px;color:#555}
"""


class Report:
    """Collects sections and writes one self-contained HTML file (plus optional JSON).

    Args:
        title: page title.
        subtitle: a line under the title (e.g. the command that made the report).
        image_height: default display height (CSS pixels) of images in strips.
    """

    def __init__(self, title: str, subtitle: str = "", image_height: int = 160):
        self.title, self.subtitle, self.image_height = title, subtitle, image_height
        self.parts: list[str] = []
        self.sections: list[str] = []

    # ---- building blocks -------------------------------------------------------------------------
    def section(self, title: str, note: str = "") -> Report:
        """Start a section with a heading and an optional explanatory paragraph."""
        self.sections.append(title)
        anchor = f"s{len(self.sections)}"
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        if note:
            self.parts.append(f'<p class="note">{html.escape(note)}</p>')
        return self

    def paragraph(self, text: str) -> Report:
        """A paragraph of plain text (escaped)."""
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')
        return self

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Report:
        """A table from a list of dicts (columns: the union of keys in order, or ``columns``)."""
        if not rows:
            self.parts.append('<p class="note">(no data)</p>')
            return self
        cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
        )
        self.parts.append(f'<table class="t"><tr>{head}</tr>{body}</table>')
        return self

    def image_rows(
        self,
        rows: Sequence[tuple[str, Sequence[tuple[str, ImageLike]]]],
        height: int | None = None,
        fmt: str = "png",
    ) -> Report:
        """Rows of captioned images: ``[(row_label, [(caption, image), ...]), ...]``."""
        h = height or self.image_height
        for label, cells in rows:
            items = [f'<div class="rowlabel">{html.escape(label)}</div>'] if label else []
            for cap, img in cells:
                items.append(
                    f'<div class="cell"><img style="height:{h}px" src="{data_uri(img, fmt)}" '
                    f'alt="{html.escape(cap)}">{html.escape(cap)}</div>'
                )
            self.parts.append(f'<div class="strip">{"".join(items)}</div>')
        return self

    def figure(self, image: ImageLike, caption: str = "", width: int | None = None) -> Report:
        """One image (e.g. a matplotlib plot as PNG bytes) with a caption."""
        style = f' style="max-width:100%;width:{width}px"' if width else ' style="max-width:100%"'
        self.parts.append(
            f'<figure><img{style} src="{data_uri(image)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return self

    def raw(self, markup: str) -> Report:
        """Append trusted HTML markup."""
        self.parts.append(markup)
        return self

    # ---- output ---------------------------------------------------------------------------------------
    def to_html(self) -> str:
        """The whole page as a string."""
        toc = " | ".join(f'<a href="#s{i + 1}">{html.escape(t)}</a>' for i, t in enumerate(self.sections))
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        sub = html.escape(self.subtitle)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f'<h1>{html.escape(self.title)}</h1><p class="sub">{sub} &middot; generated {stamp}</p>'
            f"<p>{toc}</p>" + "\n".join(self.parts) + "</body></html>\n"
        )

    def write(self, path: str | Path, json_path: str | Path | None = None, data: Any = None) -> Path:
        """Write the HTML (and ``data`` as JSON to ``json_path``) atomically; returns the HTML path."""
        path = Path(path)
        atomic_write_text(path, self.to_html())
        if json_path is not None:
            atomic_write_text(Path(json_path), json.dumps(jsonable(data), indent=2) + "\n")
        return path


def jsonable(v: Any) -> Any:
    """Convert numpy / torch scalars and arrays, paths and tuples to JSON-safe values (NaN -> None)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist())
    if isinstance(v, np.generic):
        return jsonable(v.item())
    if isinstance(v, float):
        return None if (math.isnan(v) or math.isinf(v)) else v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v
