"""The inline stylesheet of the HTML report (light and dark schemes, readable from phone to laptop)."""

from __future__ import annotations

__all__ = ["PAGE_CSS"]

PAGE_CSS = """
:root { color-scheme: light dark; --bg: #f5f6f8; --card: #ffffff; --ink: #1d2329; --muted: #5f6b76;
  --line: #e2e5e9; --accent: #3566d6; --track: #e3e9f7; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171b; --card: #1d2126; --ink: #e7e9ec; --muted: #9aa4ae; --line: #2f353c;
    --accent: #7ea4f6; --track: #283349; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width: 1240px; margin: 0 auto; padding: 32px 24px 40px; }
h1 { font-size: 1.75rem; line-height: 1.2; margin: 0 0 6px; letter-spacing: -0.01em; }
h2 { font-size: 1.1rem; margin: 0; overflow-wrap: anywhere; }
h3 { font-size: .75rem; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
  margin: 0 0 10px; font-weight: 600; }
.subtitle { margin: 0 0 10px; color: var(--muted); }
.meta { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 20px; margin: 0;
  color: var(--muted); font-size: .875rem; }
.legend { display: inline-flex; align-items: center; gap: 6px; }
.legend img { width: 140px; height: 10px; border-radius: 3px; }
.toc ol { display: flex; flex-wrap: wrap; gap: 6px 8px; list-style: none; padding: 0; margin: 14px 0 0; }
.toc a { display: inline-block; padding: 2px 10px; border: 1px solid var(--line); border-radius: 999px;
  color: var(--ink); text-decoration: none; font-size: .8rem; background: var(--card); }
.toc a:hover { border-color: var(--accent); color: var(--accent); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 18px 22px 22px; margin: 20px 0; box-shadow: 0 1px 2px rgba(0, 0, 0, .04); }
.card-head { display: flex; justify-content: space-between; align-items: baseline; gap: 12px;
  margin-bottom: 14px; padding-bottom: 10px; border-bottom: 1px solid var(--line); }
.dims { color: var(--muted); font-size: .8rem; font-variant-numeric: tabular-nums; white-space: nowrap; }
.card-body { display: grid; grid-template-columns: minmax(180px, 240px) 1fr; gap: 24px; align-items: start; }
@media (max-width: 760px) { .card-body { grid-template-columns: 1fr; } }
.preds { list-style: none; padding: 0; margin: 0; }
.preds li { display: grid; grid-template-columns: 1fr auto; gap: 3px 10px; margin-bottom: 10px; font-size: .9rem; }
.preds li:first-child .label { font-weight: 600; }
.preds .label { overflow-wrap: anywhere; }
.preds .pct { color: var(--muted); font-variant-numeric: tabular-nums; }
.preds .bar { grid-column: 1 / -1; height: 6px; border-radius: 3px; background: var(--track); overflow: hidden; }
.preds .bar span { display: block; height: 100%; background: var(--accent); }
.cells { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 14px; }
figure { margin: 0; }
figure img { display: block; width: 100%; height: auto; border-radius: 8px; background: var(--line); }
figcaption { margin-top: 5px; text-align: center; font-size: .82rem; overflow-wrap: anywhere; }
figure.original figcaption { color: var(--muted); font-style: italic; }
.table-wrap { overflow-x: auto; margin-top: 18px; }
table { border-collapse: collapse; width: auto; min-width: min(100%, 480px); font-size: .875rem;
  font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); font-size: .8rem; padding-bottom: 6px; }
th, td { padding: 6px 14px; min-width: 90px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { color: var(--muted); font-weight: 600; }
tbody tr:hover { background: var(--track); }
.summary h2 { margin-bottom: 4px; }
.note { color: var(--muted); font-style: italic; margin: 0; }
main > .note { margin: 18px 0 0; }
footer { margin-top: 28px; color: var(--muted); font-size: .8rem; text-align: center; }
""".strip()
