"""The report's HTML: one self-contained page (inline CSS, images as data URIs, no
scripts, fonts or links that need a network), and the small pieces sections build from."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from string import Template


def esc(value: object) -> str:
    return escape(str(value), quote=True)


@dataclass
class Section:
    """One chapter of the report. ``missing`` set: its inputs are absent, and the body
    says what to run to see it."""

    key: str
    title: str
    body: str = ""
    missing: str | None = None
    failed: str | None = None
    extra_classes: list[str] = field(default_factory=list)


def lesson(*sentences: str) -> str:
    """The plain-language explanation at the top of a section (already-escaped HTML)."""
    return '<div class="lesson">' + "".join(f"<p>{s}</p>" for s in sentences if s) + "</div>"


def note(text: str, kind: str = "info") -> str:
    return f'<p class="note {esc(kind)}">{text}</p>'


def figure(inner: str, caption: str = "", cls: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="{esc(cls)}">{inner}{cap}</figure>'


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML (escape text before passing it in)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def details(summary: str, inner: str, open_: bool = False) -> str:
    return f'<details{" open" if open_ else ""}><summary>{summary}</summary>{inner}</details>'


def number(n: float | int) -> str:
    """12 345 678 → '12.3 million' style for people; small numbers as they are."""
    n = float(n)
    for size, word in ((1e9, "billion"), (1e6, "million")):
        if abs(n) >= size:
            return f"{n / size:.3g} {word}"
    return f"{n:,.0f}" if n == int(n) else f"{n:.3g}"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --line:#e3e3e3; --card:#ffffff; --bg:#f6f4ef;
        --accent:#b3541e; --good:#2e7d32; --warn:#b26a00; --bad:#c62828; --tint:#fff7ec; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.top { background:#2b2118; color:#fff; padding:28px 24px 20px; }
header.top h1 { margin:0 0 6px; font-size:28px; }
header.top p { margin:4px 0; color:#e8dccf; max-width:900px; }
main { max-width:1120px; margin:0 auto; padding:12px 20px 60px; }
nav.toc { display:flex; flex-wrap:wrap; gap:8px; margin:14px 0 0; }
nav.toc a { color:#fff; background:#4a3a2c; padding:4px 10px; border-radius:14px; text-decoration:none; font-size:14px; }
nav.toc a.missing { background:#6b625a; color:#d9d0c7; }
.stages { display:flex; flex-wrap:wrap; gap:6px; margin-top:10px; font-size:13px; }
.stages span { padding:2px 8px; border-radius:10px; background:#4a3a2c; }
.stages .done { background:#2e5e31; } .stages .failed { background:#8e2525; }
section.chapter { background:var(--card); border:1px solid var(--line); border-radius:10px;
                  margin:22px 0; padding:18px 22px 22px; }
section.chapter h2 { margin:0 0 10px; font-size:23px; }
section.chapter h3 { margin:22px 0 8px; font-size:18px; }
.lesson { background:var(--tint); border-left:4px solid var(--accent); padding:8px 14px; margin:0 0 14px; border-radius:4px; }
.lesson p { margin:6px 0; }
.note { padding:8px 12px; border-radius:6px; background:#eef3f8; margin:10px 0; }
.note.warn { background:#fff4e0; } .note.missing { background:#f1f1f1; color:var(--muted); }
.note.toy { background:#fde8e8; border:1px solid #f3b6b6; font-weight:600; }
.sheet { display:grid; grid-template-columns:repeat(auto-fill, minmax(190px, 1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:6px; background:#fff; font-size:13px; }
.card img { width:100%; height:auto; display:block; border-radius:4px; }
.card .file { font-weight:600; overflow-wrap:anywhere; }
.noimage { height:120px; display:flex; align-items:center; justify-content:center; background:#eee; color:var(--muted); border-radius:4px; }
.badge { display:inline-block; padding:0 7px; border-radius:9px; color:#fff; font-size:12px; font-weight:600; }
.badge.kept { background:var(--good); } .badge.culled { background:var(--warn); } .badge.failed { background:var(--bad); }
.badge.win { background:var(--accent); } .badge.upscaled { background:#6b5fb5; }
table { border-collapse:collapse; width:100%; margin:8px 0; font-size:14px; }
th, td { border-bottom:1px solid var(--line); padding:5px 8px; text-align:left; vertical-align:top; }
th { background:#faf8f4; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
figure { margin:8px 0; display:inline-block; vertical-align:top; text-align:center; }
figcaption { font-size:13px; color:var(--muted); max-width:260px; margin:4px auto 0; }
.row { display:flex; flex-wrap:wrap; gap:12px; align-items:flex-start; }
img.pixel { image-rendering:pixelated; }
img.big { width:192px; height:auto; } img.mid { width:128px; height:auto; } img.small { width:72px; height:auto; }
img.chart { max-width:100%; height:auto; }
.ci { position:relative; height:14px; width:220px; background:#f0ece6; border-radius:7px; }
.ci .span { position:absolute; top:3px; height:8px; background:#e0a679; border-radius:4px; }
.ci .dot { position:absolute; top:1px; width:12px; height:12px; margin-left:-6px; border-radius:6px; background:var(--accent); }
.ci .half { position:absolute; top:-3px; bottom:-3px; left:50%; border-left:2px dashed #777; }
.tok { display:inline-block; margin:2px; padding:1px 6px; border-radius:5px; background:#e8eef7;
       font:13px/1.5 ui-monospace, Menlo, Consolas, monospace; }
.tok.trigger { background:#ffe1c9; } .tok.cut { background:#eee; color:#999; text-decoration:line-through; }
.tok.end { border-right:3px solid #9db2d6; }
.caption { font-family: ui-monospace, Menlo, Consolas, monospace; font-size:13px; }
.won { background:#fff2e6; }
.verdict { font-size:18px; font-weight:600; margin:10px 0; }
.bound { color:var(--muted); } .small { font-size:12px; }
.code { font-family: ui-monospace, Menlo, Consolas, monospace; background:#f3f1ed; padding:1px 5px; border-radius:4px; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); font-weight:600; }
footer { color:var(--muted); font-size:13px; text-align:center; margin:30px 0; }
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<header class="top">
<h1>$title</h1>
$intro
<div class="stages">$stages</div>
<nav class="toc">$toc</nav>
</header>
<main>
$toy
$sections
</main>
<footer>$footer</footer>
</body>
</html>
""")


def render_section(section: Section) -> str:
    body = section.body
    if section.failed:
        body += note(f"This part of the report could not be drawn: {esc(section.failed)} "
                     "(the details are in the run's log.txt).", "warn")
    elif section.missing:
        body = note(section.missing, "missing") + body
    classes = " ".join(["chapter", *section.extra_classes])
    return (f'<section class="{classes}" id="{esc(section.key)}" data-section="{esc(section.key)}">'
            f"<h2>{esc(section.title)}</h2>{body}</section>")


def render_page(*, title: str, intro: str, stages: dict[str, str], sections: list[Section], toy: str,
                footer: str) -> str:
    toc = "".join(f'<a href="#{esc(s.key)}" class="{"missing" if s.missing or s.failed else ""}">{esc(s.title)}</a>'
                  for s in sections)
    stage_html = "".join(f'<span class="{esc(status)}">{esc(name)}: {esc(status)}</span>'
                         for name, status in stages.items())
    return PAGE.substitute(title=esc(title), css=CSS, intro=intro, stages=stage_html, toc=toc, toy=toy,
                           sections="\n".join(render_section(s) for s in sections), footer=footer)
