"""``OUT/summary.csv`` (and ``summary.parquet`` with pyarrow) and ``OUT/report.html``.

Both are rebuilt from every ``OUT/*/result.json`` after each run, so a resumed run's report
still lists the recordings finished earlier. The page is self-contained: thumbnails are inline
JPEG, the lesion-area plots inline SVG.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from pathlib import Path

from stream.batch.plan import RESULT, STAGING
from stream.batch.work import THUMBNAIL

COLUMNS = ("key", "status", "reason", "path", "duration_s", "frames_in", "frames_out", "fps",
           "wall_s", "mean_area_frac", "max_area_frac", "lesion_frames", "attempts", "device",
           "weights_sha256")


def load_results(out: Path) -> list[dict]:
    """Every readable ``OUT/<key>/result.json``, sorted by key."""
    results = []
    for path in sorted(out.glob(f"*/{RESULT}")):
        if path.parent.name == STAGING:
            continue
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(results, key=lambda r: r.get("key", ""))


def row(result: dict) -> dict:
    """The summary row of one result."""
    area = result.get("area") or {}
    return {
        "key": result.get("key"), "status": result.get("status"),
        "reason": result.get("reason", ""), "path": (result.get("input") or {}).get("path"),
        "duration_s": result.get("duration_s"), "frames_in": result.get("frames_in", 0),
        "frames_out": result.get("frames_out", 0), "fps": result.get("fps"),
        "wall_s": result.get("wall_s"), "mean_area_frac": area.get("mean_frac"),
        "max_area_frac": area.get("max_frac"), "lesion_frames": area.get("lesion_frames"),
        "attempts": result.get("attempts"), "device": result.get("device"),
        "weights_sha256": (result.get("options") or {}).get("weights_sha256"),
    }


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(out: Path, results: list[dict]) -> list[Path]:
    """Write ``summary.csv`` (and ``summary.parquet`` when pyarrow is there); their paths."""
    rows = [row(r) for r in results]
    tmp = out / "summary.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    os.replace(tmp, out / "summary.csv")
    written = [out / "summary.csv"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.Table.from_pylist(rows) if rows else pa.table({c: [] for c in COLUMNS})
    pq.write_table(table, out / "summary.parquet.tmp")
    os.replace(out / "summary.parquet.tmp", out / "summary.parquet")
    return written + [out / "summary.parquet"]


def area_svg(series: list[float], *, width: int = 160, height: int = 40) -> str:
    """A small line plot of lesion area (fraction of the frame, 0 to the largest) over time."""
    if not series:
        return ""
    top = max(max(series), 1e-6)
    step = width / max(1, len(series) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (height - 4) * v / top:.1f}"
                      for i, v in enumerate(series))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<rect width="{width}" height="{height}" fill="#f6f6f6"/>'
            f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{points}"/>'
            f'<text x="2" y="10" font-size="9">max {top:.1%}</text></svg>')


def _thumbnail(out: Path, key: str) -> str:
    path = out / key / THUMBNAIL
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(key)}" src="data:image/jpeg;base64,{data}">'


def _cell(value) -> str:
    if value is None or value == "":
        return "–"
    return html.escape(f"{value:.2f}" if isinstance(value, float) else str(value))


def write_html(out: Path, results: list[dict]) -> Path:
    """Write ``report.html``: totals, then a row per recording."""
    ok = [r for r in results if r.get("status") == "ok"]
    failed = len(results) - len(ok)
    frames = sum(r.get("frames_out", 0) for r in ok)
    seconds = sum(r.get("duration_s") or 0 for r in ok)
    wall = sum(r.get("wall_s") or 0 for r in results)
    body = []
    for r in results:
        area = r.get("area") or {}
        status = html.escape(r.get("status", "?"))
        reason = html.escape(r.get("reason") or "")
        body.append(
            f'<tr class="{status}"><td>{html.escape(r.get("key", ""))}</td>'
            f"<td>{status}<br><small>{reason}</small></td>"
            f"<td>{_cell(r.get('duration_s'))}</td><td>{_cell(r.get('frames_out'))}</td>"
            f"<td>{_cell(r.get('fps'))}</td><td>{_thumbnail(out, r.get('key', ''))}</td>"
            f"<td>{area_svg(area.get('series') or [])}</td></tr>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SLSNet batch report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
tr.failed {{ background: #fdecea; }}
</style></head><body>
<h1>SLSNet batch report</h1>
<p>{len(results)} recordings: {len(ok)} ok, {failed} failed · {frames} frames,
{seconds:.1f} s of video · {wall:.1f} s of processing</p>
<table><thead><tr><th>recording</th><th>status</th><th>duration s</th><th>frames</th>
<th>processing fps</th><th>mid-recording overlay</th><th>lesion area over time</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
    path = out / "report.html"
    _replace(path, page)
    return path
