"""``desync-ref dump --html``: one self-contained page for a dissection (spec/dump.md § "The
HTML page").

A hex view where every record and field is a highlighted run of bytes; hovering a field
shows its decoded value and spec section, clicking pins it. For an index, a chunk map: a
bar of the blob's length with one segment per chunk, sized by length, coloured shared or
unique when a second index is given. Inline CSS and script only, and a Content Security
Policy that forbids every fetch, so the page works offline and cannot reach the network.
"""

from __future__ import annotations

import html
import json
from typing import Any, Final

from desync_ref.audit.dump import spec_section, to_json
from desync_ref.audit.dump_formats import CAIBX, CAIDX, Dissection, index_chunks

HEX_LIMIT: Final = 64 * 1024  # bytes shown in the hex view; records past it are listed only
_ROW: Final = 16

_CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:8px 14px;background:#263238;color:#fff}
header .bad{color:#ff8a80;font-weight:bold} header .good{color:#b9f6ca}
main{display:grid;grid-template-columns:minmax(260px,1fr) auto minmax(300px,1.2fr);gap:10px;padding:10px}
section{background:#fff;border:1px solid #ddd;border-radius:4px;padding:6px;overflow:auto;max-height:80vh}
h2{font-size:13px;margin:2px 0 6px}
table{border-collapse:collapse;width:100%} td{padding:1px 6px;white-space:nowrap}
tr.rec{cursor:pointer} tr.rec:hover{background:#eef} tr.rec.sel{background:#cfe3ff}
tr.dmg td{color:#b71c1c}
#hex{font:12px/1.5 ui-monospace,monospace;white-space:pre}
#hex .off{color:#999} .r0{background:#e3f2fd} .r1{background:#fff3e0}
.f{cursor:pointer;border-bottom:2px solid transparent} .f:hover{border-bottom-color:#1565c0}
.f.sel{background:#ffeb3b!important} .rsel{outline:1px solid #1565c0}
.damage{background:#ffcdd2!important;color:#b71c1c}
#detail dt{font-weight:bold;margin-top:4px} #detail dd{margin:0 0 0 8px;word-break:break-all;font-family:monospace}
#map{display:flex;height:26px;border:1px solid #999;margin:6px 0}
#map div{height:100%;border-right:1px solid #fff;box-sizing:border-box;cursor:pointer;min-width:1px}
.shared{background:#43a047} .unique{background:#1e88e5} .chunk{background:#7e57c2}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
"""

_JS = """
const D = JSON.parse(document.getElementById('dump-data').textContent);
const $ = (id) => document.getElementById(id);
let pinned = null;
function show(r, f) {
  const rec = D.records[r];
  const fld = f === null ? null : rec.fields[f];
  $('d-record').textContent = rec.type + ' at ' + rec.offset + ' (' + rec.size + ' bytes)';
  $('d-field').textContent = fld ? fld.name : '(whole record)';
  $('d-offset').textContent = fld ? fld.offset + ' (' + fld.size + ' bytes)' : String(rec.offset);
  $('d-value').textContent = fld ? fld.decoded : '';
  $('d-spec').textContent = rec.spec;
  $('d-chunks').textContent = rec.chunks ? rec.chunks.map(c => c.index + ' ' + c.id).join(', ') : '';
}
function select(r, f) {
  document.querySelectorAll('.sel').forEach(e => e.classList.remove('sel'));
  document.querySelectorAll('.rsel').forEach(e => e.classList.remove('rsel'));
  pinned = [r, f];
  const row = $('rec-' + r); if (row) row.classList.add('sel');
  document.querySelectorAll('[data-r="' + r + '"]').forEach(e => e.classList.add('rsel'));
  if (f !== null) document.querySelectorAll('[data-f="' + r + '.' + f + '"]').forEach(e => e.classList.add('sel'));
  show(r, f);
}
document.querySelectorAll('.f').forEach(e => {
  const [r, f] = e.dataset.f.split('.').map(Number);
  e.addEventListener('mouseenter', () => show(r, f));
  e.addEventListener('mouseleave', () => { if (pinned) show(pinned[0], pinned[1]); });
  e.addEventListener('click', () => select(r, f));
});
document.querySelectorAll('tr.rec').forEach(e => {
  e.addEventListener('click', () => {
    const r = Number(e.dataset.r); select(r, null);
    const first = document.querySelector('[data-r="' + r + '"]'); if (first) first.scrollIntoView({block: 'center'});
  });
});
document.querySelectorAll('#map div').forEach(e => e.addEventListener('click', () => {
  $('d-record').textContent = 'chunk ' + e.dataset.n;
  $('d-field').textContent = e.dataset.state;
  $('d-offset').textContent = e.dataset.start + ' (' + e.dataset.size + ' bytes)';
  $('d-value').textContent = e.dataset.id;
  $('d-spec').textContent = 'spec/index.md#table-object';
  $('d-chunks').textContent = '';
}));
"""


def _owners(d: Dissection, size: int) -> tuple[list[int], list[str]]:
    """For each shown byte: the record it belongs to (-1: none) and its field key ("" none)."""
    rec = [-1] * size
    fld = [""] * size
    for i, r in enumerate(d.records):
        for b in range(max(0, r.offset), min(size, r.offset + r.size)):
            rec[b] = i
        for j, f in enumerate(r.fields):
            for b in range(max(0, f.offset), min(size, f.offset + f.size)):
                if not fld[b] or int(fld[b].split(".")[0]) != i:
                    fld[b] = f"{i}.{j}"  # the first field over a byte keeps it
    return rec, fld


def _span(key: tuple[int, str], text: str) -> str:
    r, f = key
    cls = [f"r{r % 2}"] if r >= 0 else []
    attrs = f' data-r="{r}"' if r >= 0 else ""
    if f:
        cls.append("f")
        attrs += f' data-f="{f}"'
    return f'<span class="{" ".join(cls)}"{attrs}>{text}</span>'


def _hex_view(d: Dissection, data: bytes) -> str:
    """Rows of 16 bytes; each run of bytes of one field (or record) is one span, a byte
    where damage lies is marked on its own."""
    shown = data[:HEX_LIMIT]
    rec, fld = _owners(d, len(shown))
    bad = {x.offset for x in d.damage}
    lines = []
    for row in range(0, len(shown), _ROW):
        runs: list[tuple[tuple[int, str], list[str]]] = []
        for b in range(row, min(row + _ROW, len(shown))):
            key = (rec[b], fld[b])
            text = f"{shown[b]:02x}"
            if b in bad:
                text = f'<span class="damage" title="damage">{text}</span>'
            if runs and runs[-1][0] == key and b not in bad:
                runs[-1][1].append(text)
            else:
                runs.append((key, [text]))
        body = " ".join(_span(key, " ".join(texts)) for key, texts in runs)
        lines.append(f'<span class="off">{row:08x}</span>  {body}')
    more = f"\n... {len(data) - HEX_LIMIT} more bytes not shown" if len(data) > HEX_LIMIT else ""
    return "\n".join(lines) + more


def _chunk_map(d: Dissection, other: Dissection | None, other_name: str) -> str:
    chunks = index_chunks(d)
    if not chunks:
        return ""
    theirs = {c[2] for c in index_chunks(other)} if other is not None else None
    segments = []
    shared = 0
    for n, (start, size, cid) in enumerate(chunks):
        state = "chunk" if theirs is None else ("shared" if cid in theirs else "unique")
        shared += state == "shared"
        segments.append(f'<div class="{state}" style="flex:{size} 0 0" data-n="{n}" data-start="{start}" '
                        f'data-size="{size}" data-id="{cid.hex()}" data-state="{state}" '
                        f'title="chunk {n}: {size} bytes at {start}, {cid.hex()[:16]}... ({state})"></div>')
    legend = ""
    if theirs is not None:
        legend = (f'<p class="legend"><span class="shared"></span>shared with {html.escape(other_name)} '
                  f'({shared})<span class="unique"></span>only here ({len(chunks) - shared})</p>')
    return (f'<section style="grid-column:1/-1"><h2>Chunk map: {len(chunks)} chunks, '
            f'{chunks[-1][0] + chunks[-1][1]} bytes</h2><div id="map">{"".join(segments)}</div>{legend}</section>')


def _record_rows(d: Dissection) -> str:
    rows = [f'<tr class="rec" id="rec-{i}" data-r="{i}"><td>{r.offset}</td><td>{r.size}</td>'
            f'<td>{html.escape(r.type)}</td><td>{html.escape(spec_section(d.type, r.type))}</td></tr>'
            for i, r in enumerate(d.records)]
    rows += [f'<tr class="dmg"><td>{x.offset}</td><td></td><td colspan="2">DAMAGE: {html.escape(x.message)}'
             f'{html.escape(f" (expected {x.expected}, found {x.found})" if x.expected else "")}</td></tr>'
             for x in d.damage]
    return "".join(rows)


def render_page(d: Dissection, data: bytes, name: str, other: Dissection | None = None,
                other_name: str = "") -> str:
    doc: dict[str, Any] = to_json(d, name)
    doc.pop("stream", None)  # the page shows the file's own bytes
    payload = json.dumps(doc).replace("</", "<\\/")
    state = '<span class="good">valid</span>' if d.valid else '<span class="bad">INVALID</span>'
    facts = ", ".join(f"{k}: {html.escape(str(v))}" for k, v in d.facts.items())
    chunk_map = _chunk_map(d, other, other_name) if d.type in (CAIBX, CAIDX) else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>dump: {html.escape(name)}</title><style>{_CSS}</style></head>
<body><header><b>{html.escape(name)}</b>: {html.escape(d.type)}, {d.size} bytes, {state}
<small>{facts}</small></header>
<main>{chunk_map}
<section><h2>Records ({len(d.records)})</h2><table id="records">
<tr><th>offset</th><th>size</th><th>type</th><th>spec</th></tr>{_record_rows(d)}</table></section>
<section><h2>Bytes</h2><div id="hex">{_hex_view(d, data)}</div></section>
<section><h2>Selected</h2><dl id="detail">
<dt>record</dt><dd id="d-record">hover or click a field</dd><dt>field</dt><dd id="d-field"></dd>
<dt>offset</dt><dd id="d-offset"></dd><dt>value</dt><dd id="d-value"></dd>
<dt>spec</dt><dd id="d-spec"></dd><dt>chunks</dt><dd id="d-chunks"></dd></dl></section>
</main>
<script type="application/json" id="dump-data">{payload}</script>
<script>{_JS}</script>
</body></html>
"""
