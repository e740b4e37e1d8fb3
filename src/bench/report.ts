import type { BenchResult, CellResult } from './run.js'

/** Human-readable output of a run: the table, the terminal chart, the HTML report. */

/** Columns of the table; `width` is a minimum, so rows printed one at a time line up with the header. */
const COLUMNS: Array<{ title: string, width?: number, value: (c: CellResult) => string }> = [
  { title: 'pool', width: 5, value: (c) => String(c.poolSize) },
  { title: 'clients', width: 17, value: (c) => c.waiters > 0 ? `${c.clients} (${c.waiters} in blpop)` : String(c.clients) },
  { title: 'ops/s', width: 7, value: (c) => formatRate(c.opsPerSec) },
  { title: 'p50 ms', value: (c) => formatMs(c.p50Ms) },
  { title: 'p99 ms', value: (c) => formatMs(c.p99Ms) },
  { title: 'pool-wait p99 ms', value: (c) => c.poolWaitP99Ms === null ? 'n/a' : c.poolWaits === 0 ? '- (no pins)' : formatMs(c.poolWaitP99Ms) },
  { title: 'waiting max', value: (c) => c.poolWaitingMax === null ? 'n/a' : String(c.poolWaitingMax) },
  { title: 'upstream conns', value: (c) => c.upstreamConnections === null ? 'n/a' : String(c.upstreamConnections) },
  { title: 'errors', width: 7, value: (c) => String(c.errors) }
]

export function formatRate (opsPerSec: number): string {
  if (opsPerSec >= 1e6) return `${(opsPerSec / 1e6).toFixed(2)}M`
  if (opsPerSec >= 1e4) return `${(opsPerSec / 1e3).toFixed(1)}k`
  return opsPerSec.toFixed(0)
}

function formatMs (ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)
}

/** One table row per cell. */
export function formatTable (cells: CellResult[]): string {
  const rows = cells.map((c) => COLUMNS.map((col) => col.value(c)))
  const widths = COLUMNS.map((col, i) => Math.max(col.title.length, col.width ?? 0, ...rows.map((r) => r[i].length)))
  const line = (values: string[]): string => values.map((v, i) => i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i])).join('  ').trimEnd()
  return [line(COLUMNS.map((c) => c.title)), line(widths.map((w) => '─'.repeat(w))), ...rows.map(line)].join('\n') + '\n'
}

/** A row of the table as it is printed while the run goes on (same widths as the header). */
export function formatTableRow (cell: CellResult): string {
  return formatTable([cell]).split('\n')[2]
}

/**
 * Throughput by pool size, one block per concurrency, bars scaled to the best cell of that
 * concurrency; the pool size where the curve flattens is where more connections stop helping.
 */
export function asciiChart (cells: CellResult[], recommended: number | null, width = 40): string {
  const concurrencies = [...new Set(cells.map((c) => c.clients))].sort((a, b) => a - b)
  const pools = [...new Set(cells.map((c) => c.poolSize))].sort((a, b) => a - b)
  const poolWidth = Math.max(...pools.map((p) => String(p).length))
  const out: string[] = []
  for (const n of concurrencies) {
    const row = cells.filter((c) => c.clients === n)
    const best = Math.max(...row.map((c) => c.opsPerSec), 1)
    out.push(`${n} clients: throughput by pool size (bar: share of the best, ${formatRate(best)} ops/s)`)
    for (const p of pools) {
      const c = row.find((x) => x.poolSize === p)
      if (c === undefined) continue
      const eighths = Math.round((c.opsPerSec / best) * width * 8)
      const bar = '█'.repeat(Math.floor(eighths / 8)) + (eighths % 8 > 0 ? ' ▏▎▍▌▋▊▉'[eighths % 8] : '')
      out.push(`  pool ${String(p).padStart(poolWidth)} │${bar.padEnd(width)}│ ${formatRate(c.opsPerSec).padStart(6)} ops/s  p99 ${formatMs(c.p99Ms)} ms${c.errors > 0 ? `  ${c.errors} errors` : ''}${p === recommended ? '  ◀ recommended' : ''}`)
    }
  }
  return out.join('\n') + '\n'
}

/** A progress bar for stderr: `[#####·····] 5/12  pool 4 × 50 clients  ~31 s left`. */
export function progressLine (done: number, total: number, label: string, secondsLeft: number, width = 30): string {
  const filled = Math.max(0, Math.min(width, Math.round((done / total) * width)))
  return `[${'#'.repeat(filled)}${'·'.repeat(width - filled)}] ${Math.floor(done)}/${total}  ${label}  ~${Math.max(0, Math.ceil(secondsLeft))} s left`
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']

function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`)
}

/** A line chart in SVG: x = pool sizes (evenly spaced), one line per concurrency. */
export function lineChartSvg (cells: CellResult[], title: string, yLabel: string, value: (c: CellResult) => number | null, mark: number | null): string {
  const W = 560
  const H = 300
  const m = { l: 64, r: 120, t: 30, b: 40 }
  const pools = [...new Set(cells.map((c) => c.poolSize))].sort((a, b) => a - b)
  const concurrencies = [...new Set(cells.map((c) => c.clients))].sort((a, b) => a - b)
  const values = cells.map(value).filter((v): v is number => v !== null && Number.isFinite(v))
  const top = niceCeil(Math.max(...values, 0) * 1.05)
  const x = (i: number): number => m.l + (pools.length === 1 ? (W - m.l - m.r) / 2 : i * (W - m.l - m.r) / (pools.length - 1))
  const y = (v: number): number => H - m.b - (top === 0 ? 0 : (v / top) * (H - m.t - m.b))
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<text x="${W / 2 - m.r / 2}" y="18" text-anchor="middle" font-weight="bold">${escapeHtml(title)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="#333"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="#333"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 6}" text-anchor="middle">pool size</text>`,
    `<text x="14" y="${(H - m.b + m.t) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(H - m.b + m.t) / 2})">${escapeHtml(yLabel)}</text>`
  ]
  for (let t = 0; t <= 4; t++) {
    const v = (top * t) / 4
    parts.push(`<line x1="${m.l}" y1="${y(v)}" x2="${W - m.r}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${escapeHtml(yLabel.startsWith('ops') ? formatRate(v) : formatMs(v))}</text>`)
  }
  pools.forEach((p, i) => {
    parts.push(`<text x="${x(i)}" y="${H - m.b + 16}" text-anchor="middle"${p === mark ? ' font-weight="bold"' : ''}>${p}</text>`)
    if (p === mark) parts.push(`<line x1="${x(i)}" y1="${m.t}" x2="${x(i)}" y2="${H - m.b}" stroke="#2ca02c" stroke-dasharray="4 3"/>`)
  })
  concurrencies.forEach((n, k) => {
    const color = PALETTE[k % PALETTE.length]
    const points = pools.map((p, i) => {
      const c = cells.find((cell) => cell.poolSize === p && cell.clients === n)
      const v = c === undefined ? null : value(c)
      return v === null ? null : [x(i), y(v)] as const
    }).filter((pt): pt is readonly [number, number] => pt !== null)
    if (points.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}"/>`)
    for (const [a, b] of points) parts.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3" fill="${color}"/>`)
    parts.push(`<rect x="${W - m.r + 12}" y="${m.t + k * 18}" width="12" height="3" fill="${color}"/>`,
      `<text x="${W - m.r + 30}" y="${m.t + k * 18 + 5}">${n} clients</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}

function niceCeil (v: number): number {
  if (v <= 0) return 1
  const magnitude = 10 ** Math.floor(Math.log10(v))
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= v) return step * magnitude
  return 10 * magnitude
}

/** A self-contained HTML page: charts, recommendation, every cell, the settings. */
export function htmlReport (result: BenchResult): string {
  const rec = result.recommendation
  const table = ['<table><thead><tr>', ...COLUMNS.map((c) => `<th>${escapeHtml(c.title)}</th>`), '</tr></thead><tbody>',
    ...result.cells.map((cell) => `<tr${cell.poolSize === rec.poolSize ? ' class="rec"' : ''}>${COLUMNS.map((c) => `<td>${escapeHtml(c.value(cell))}</td>`).join('')}</tr>`),
    '</tbody></table>'].join('')
  const against = result.mode === 'in-process' ? `an in-process respool against ${result.upstream ?? ''}` : `the respool at ${result.target ?? ''}`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>respool bench</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}tr.rec td{background:#eef8ee}.charts{display:flex;flex-wrap:wrap;gap:1em}pre{background:#f8f8f8;padding:1em}</style></head>
<body><h1>respool bench</h1>
<p>Measured ${escapeHtml(against)}, ${escapeHtml(result.startedAt)} to ${escapeHtml(result.finishedAt)}.</p>
<h2>Recommendation: pool size ${rec.poolSize ?? 'none'}</h2><p>${escapeHtml(rec.reason)}</p>
<div class="charts">
${lineChartSvg(result.cells, 'Throughput', 'ops/s', (c) => c.opsPerSec, rec.poolSize)}
${lineChartSvg(result.cells, 'p99 latency', 'ms', (c) => c.p99Ms, rec.poolSize)}
${lineChartSvg(result.cells, 'Pool-wait p99', 'ms', (c) => c.poolWaitP99Ms, rec.poolSize)}
</div>
<h2>Cells</h2>${table}
<h2>Settings</h2><pre>${escapeHtml(JSON.stringify(result.settings, null, 2))}</pre>
</body></html>
`
}
