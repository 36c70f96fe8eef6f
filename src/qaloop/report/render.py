"""Write the report: tables (markdown and HTML) with their plots, from `ReportData`."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from qaloop.report import cost as C
from qaloop.report import feedback as feedback_gain
from qaloop.report import tables as T
from qaloop.report.data import ReportData
from qaloop.report.tables import Cell, Table

PLOT_FILES = (
    "latency_cdf.png",
    "throughput.png",
    "retries.png",
    "feedback.png",
    "scores.png",
    "dead_letters.png",
)


def fmt(value: Cell, digits: int | None = None) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}f}"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    text = str(value)
    stripped = text.lstrip(" ")
    return "\u00a0" * (len(text) - len(stripped)) * 2 + stripped  # keep sub-row indents


def cells(table: Table, row: Sequence[Cell]) -> list[str]:
    """A row's cells as text. A percentage (its column or its row label has a %) always has
    one decimal; other floats follow the table's digits."""
    row_pct = bool(row) and isinstance(row[0], str) and "%" in row[0]
    return [
        fmt(c, 1 if (row_pct or "%" in column) and isinstance(c, float) else table.digits)
        for column, c in zip(table.columns, row, strict=False)
    ]


def markdown_table(table: Table) -> str:
    lines = [f"| {' | '.join(table.columns)} |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(c.replace("|", "\\|") for c in cells(table, row)) + " |"
        for row in table.rows
    ]
    if not table.rows:
        lines.append("| " + " | ".join(["(none)"] + [""] * (len(table.columns) - 1)) + " |")
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(table, row)) + "</tr>"
            for row in table.rows
        )
        or f'<tr><td colspan="{len(table.columns)}">(none)</td></tr>'
    )
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


@dataclass(slots=True)
class Section:
    title: str
    text: str
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Document:
    title: str
    intro: str
    sections: list[Section]


def write_document(doc: Document, out_dir: Path, stem: str = "report") -> list[Path]:
    """`stem`.md and `stem`.html next to the plots (referenced by relative path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {doc.title}", "", doc.intro, ""]
    body = [f"<h1>{html.escape(doc.title)}</h1>", f"<p>{html.escape(doc.intro)}</p>"]
    for s in doc.sections:
        md += [f"## {s.title}", "", s.text, ""]
        body += [f"<h2>{html.escape(s.title)}</h2>", f"<p>{html.escape(s.text)}</p>"]
        for t in s.tables:
            md += [f"**{t.title}**", "", markdown_table(t), ""]
            body += [f"<h3>{html.escape(t.title)}</h3>", html_table(t)]
        for p in s.plots:
            md += [f"![{s.title}]({p})", ""]
            body.append(f'<p><img src="{html.escape(p)}" alt="{html.escape(s.title)}"></p>')
    md_path = out_dir / f"{stem}.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    html_path = out_dir / f"{stem}.html"
    html_path.write_text(_page(doc.title, "\n".join(body)), encoding="utf-8")
    return [md_path, html_path]


def _page(title: str, body: str) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{background:#f1f3f5}.note{color:#555;font-size:0.9em}img{max-width:100%}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{style}</style></head><body>{body}</body></html>\n"
    )


def build(data: ReportData, out_dir: Path, threshold: float) -> list[Path]:
    """Compute every section, draw its plots and write report.md + report.html."""
    from qaloop.report import plots  # matplotlib: the optional `report` extra

    out_dir.mkdir(parents=True, exist_ok=True)
    by_question = T.group_events(data.events)
    overview = T.overview(data.questions, data.events, data.dead_letters)
    server_latency = T.latency_from_storage(data.questions)
    if data.requests is not None:
        latency = T.latency_from_requests(data.requests)
        series: dict[str, Sequence[float]] = {
            kind: [r.sent_at + r.latency_s for r in data.requests if r.outcome == kind]
            for kind in ("hit", "queued", "error")
        }
        tp_source = "requests CSV: answers per second by outcome"
    else:
        latency = server_latency
        series = {
            "accepted": [float(q["first_seen"]) for q in data.questions],
            "finished": [
                float(q["finished_at"]) for q in data.questions if q.get("finished_at") is not None
            ],
        }
        tp_source = "storage: questions accepted and finished per second"
    retry = T.retries(by_question)
    loop = T.feedback(by_question)
    score = T.scores(data.events, threshold)
    dead = T.dead_letters(data.dead_letters)
    spend = C.cost(data.usage, data.questions)

    client_side = data.requests is not None
    plots.latency_cdf(latency, out_dir / "latency_cdf.png", server_latency if client_side else None)
    plots.throughput(series, out_dir / "throughput.png", tp_source)
    plots.retries(retry, out_dir / "retries.png")
    plots.feedback(loop, out_dir / "feedback.png", threshold)
    plots.scores(score, out_dir / "scores.png")
    plots.dead_letters(dead, out_dir / "dead_letters.png")

    doc = Document(
        "qaloop report",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} from {data.source}. "
        f"Threshold {threshold:g}. Regenerate with `qaloop report --db URL --out DIR`.",
        [
            Section("Overview", "What storage holds.", [overview.table()]),
            Section(
                "Perceived latency and throughput",
                "Time to an answer. A hit is answered from cache or storage at once; a queued "
                "question waits for the LLM, the judge and any retries. "
                + (
                    "Client-side numbers come from the traffic CSV (what users see); "
                    "server-side ones from storage, for comparison."
                    if client_side
                    else "These are server-side numbers (storage's clock); pass "
                    "--requests traffic.csv for what the client saw, which is higher."
                ),
                [
                    latency.table(),
                    # the CSV has the hits: no "pass --requests" hint under the server table
                    *([replace(server_latency, hits_without_latency=0).table()] * client_side),
                ],
                ["latency_cdf.png", "throughput.png"],
            ),
            Section(
                "Retry effectiveness per error type",
                "From the llm_error / parked / resumed events of every question.",
                [retry.table()],
                ["retries.png"],
            ),
            Section(
                "Feedback loop",
                "Does sending low-scored answers back to the LLM pay off, and what does it cost?",
                [loop.attempts_table(), loop.cost_table()],
                ["feedback.png"],
            ),
            Section("Score distribution", "Every scored answer.", [score.table()], ["scores.png"]),
            Section(
                "Dead letters",
                "Every dead-letter record, by reason.",
                [dead.table()],
                ["dead_letters.png"],
            ),
            Section(
                "Spend",
                "What the LLM calls cost: tokens from each response's usage metadata (estimated "
                "when the provider gave none) times the price table (docs/spend.md).",
                [spend.summary_table(), spend.models_table(), spend.lanes_table()],
            ),
            Section(*feedback_gain.section(data, out_dir)),
        ],
    )
    written = write_document(doc, out_dir)
    return written + [out_dir / name for name in (*PLOT_FILES, feedback_gain.PLOT_FILE)]
