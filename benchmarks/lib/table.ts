/** Plain-text and Markdown tables, and number formatting for the reports. */

export interface Table {
  title: string
  headers: string[]
  rows: string[][]
  /** Notes printed under the table. */
  notes?: string[]
}

const numeric = (s: string): boolean => /^[-+~≈]?[\d,.]+(\s?[%×x]|\s?µs|\s?ms|\s?KB|\s?MB)?$/.test(s.trim())

export function textTable (t: Table): string {
  const widths = t.headers.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)))
  const fmt = (cells: string[]): string => cells.map((c, i) => numeric(c) ? c.padStart(widths[i]) : c.padEnd(widths[i])).join('  ').trimEnd()
  const lines = [t.title, fmt(t.headers), widths.map((w) => '-'.repeat(w)).join('  ')]
  for (const r of t.rows) lines.push(fmt(r))
  for (const n of t.notes ?? []) lines.push(`  ${n}`)
  return lines.join('\n')
}

export function markdownTable (t: Table): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|')
  const lines = [`#### ${t.title}`, '', `| ${t.headers.map(esc).join(' | ')} |`,
    `| ${t.headers.map((_, i) => (t.rows.some((r) => numeric(r[i] ?? '')) ? '---:' : '---')).join(' | ')} |`]
  for (const r of t.rows) lines.push(`| ${r.map(esc).join(' | ')} |`)
  if ((t.notes ?? []).length > 0) {
    lines.push('')
    for (const n of t.notes ?? []) lines.push(`- ${n}`)
  }
  return lines.join('\n')
}

export function fmtInt (n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—'
}

export function fmtMs (n: number): string {
  return Number.isFinite(n) ? n.toFixed(3) : '—'
}

export function fmtRatio (n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(2)}×` : '—'
}

export function fmtPct (n: number | null): string {
  return n !== null && Number.isFinite(n) ? `${Math.round(n * 100)}%` : '—'
}

export function fmtUs (n: number): string {
  return Number.isFinite(n) ? `${Math.round(n)} µs` : '—'
}

export function fmtMiB (kib: number): string {
  return Number.isFinite(kib) ? `${(kib / 1024).toFixed(1)} MB` : '—'
}
