/**
 * Hand-written SVG charts (no dependencies, no browser): grouped bars and line panels laid out
 * on one page.
 */

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']

export interface Box { x: number, y: number, w: number, h: number }

export interface BarGroup { label: string, values: Array<number | null> }

export interface BarPanel {
  title: string
  yLabel: string
  series: Array<{ label: string, color: string }>
  groups: BarGroup[]
  /** Optional text written above each bar (e.g. a ratio); same shape as values. */
  annotations?: Array<Array<string | null>>
}

export interface LineSeries {
  label: string
  color: string
  dash?: string
  points: Array<number | null>
  /** Index in `points` to mark with a ring (the knee). */
  mark?: number
}

export interface HLine { label: string, color: string, value: number, dash: string }

export interface LinePanel {
  title: string
  xLabel: string
  yLabel: string
  xTicks: string[]
  series: LineSeries[]
  hlines?: HLine[]
}

export function esc (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function niceMax (v: number): number {
  if (!(v > 0)) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p
  return 10 * p
}

function fmtAxis (v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(2)}M`
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`
  return `${+v.toFixed(2)}`
}

function text (x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`
}

/** Axes, grid and title of a panel; returns the plotting area and a y mapper. */
function frame (box: Box, title: string, yLabel: string, yMax: number, bottom = 95): { parts: string[], plot: Box, y: (v: number) => number } {
  const plot = { x: box.x + 62, y: box.y + 30, w: box.w - 80, h: box.h - bottom }
  const top = niceMax(yMax * 1.05)
  const y = (v: number): number => plot.y + plot.h - (v / top) * plot.h
  const parts = [text(box.x + box.w / 2, box.y + 16, title, 'text-anchor="middle" font-weight="bold" font-size="13"')]
  for (let i = 0; i <= 5; i++) {
    const v = (top * i) / 5
    const yy = y(v)
    parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${yy.toFixed(1)}" y2="${yy.toFixed(1)}" stroke="#e5e5e5"/>`)
    parts.push(text(plot.x - 6, yy + 4, fmtAxis(v), 'text-anchor="end" font-size="10" fill="#555"'))
  }
  parts.push(`<line x1="${plot.x}" x2="${plot.x}" y1="${plot.y}" y2="${plot.y + plot.h}" stroke="#333"/>`)
  parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${plot.y + plot.h}" y2="${plot.y + plot.h}" stroke="#333"/>`)
  parts.push(text(box.x + 14, plot.y + plot.h / 2, yLabel, `font-size="11" fill="#333" text-anchor="middle" transform="rotate(-90 ${box.x + 14} ${plot.y + plot.h / 2})"`))
  return { parts, plot, y }
}

export function barPanel (box: Box, p: BarPanel): string {
  const all = p.groups.flatMap((g) => g.values).filter((v): v is number => v !== null && Number.isFinite(v))
  const { parts, plot, y } = frame(box, p.title, p.yLabel, Math.max(1, ...all))
  const gw = plot.w / Math.max(1, p.groups.length)
  const bw = Math.min(28, (gw * 0.8) / Math.max(1, p.series.length))
  p.groups.forEach((g, gi) => {
    const gx = plot.x + gi * gw + (gw - bw * p.series.length) / 2
    g.values.forEach((v, si) => {
      if (v === null || !Number.isFinite(v)) return
      const x = gx + si * bw
      const yy = y(v)
      parts.push(`<rect x="${x.toFixed(1)}" y="${yy.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(plot.y + plot.h - yy).toFixed(1)}" fill="${p.series[si].color}"><title>${esc(`${g.label} ${p.series[si].label}: ${Math.round(v).toLocaleString('en-US')}`)}</title></rect>`)
      const note = p.annotations?.[gi]?.[si]
      if (note !== null && note !== undefined) parts.push(text(x + bw / 2 - 1, yy - 3, note, 'text-anchor="middle" font-size="9" fill="#333"'))
    })
    parts.push(text(plot.x + gi * gw + gw / 2, plot.y + plot.h + 14, g.label, 'text-anchor="middle" font-size="10"'))
  })
  parts.push(legend(plot.x, box.y + box.h - 24, p.series.map((s) => ({ label: s.label, color: s.color })), plot.w))
  return parts.join('\n')
}

export function linePanel (box: Box, p: LinePanel): string {
  const all = [...p.series.flatMap((s) => s.points), ...(p.hlines ?? []).map((h) => h.value)]
    .filter((v): v is number => v !== null && Number.isFinite(v))
  // Room under the axis for up to three legend lines.
  const { parts, plot, y } = frame(box, p.title, p.yLabel, Math.max(1, ...all), 115)
  const n = p.xTicks.length
  const x = (i: number): number => plot.x + 20 + (n <= 1 ? 0 : (i * (plot.w - 40)) / (n - 1))
  p.xTicks.forEach((t, i) => {
    parts.push(text(x(i), plot.y + plot.h + 14, t, 'text-anchor="middle" font-size="10"'))
  })
  parts.push(text(plot.x + plot.w / 2, plot.y + plot.h + 28, p.xLabel, 'text-anchor="middle" font-size="11" fill="#333"'))
  for (const h of p.hlines ?? []) {
    if (!Number.isFinite(h.value)) continue
    const yy = y(h.value).toFixed(1)
    parts.push(`<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${yy}" y2="${yy}" stroke="${h.color}" stroke-dasharray="${h.dash}" stroke-width="1"><title>${esc(`${h.label}: ${Math.round(h.value).toLocaleString('en-US')}`)}</title></line>`)
  }
  p.series.forEach((s, si) => {
    const pts = s.points.map((v, i) => (v === null || !Number.isFinite(v) ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`))
    let run: string[] = []
    const flush = (): void => {
      if (run.length > 1) parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" ${s.dash !== undefined ? `stroke-dasharray="${s.dash}"` : ''} points="${run.join(' ')}"/>`)
      run = []
    }
    for (const pt of pts) {
      if (pt === null) flush()
      else run.push(pt)
    }
    flush()
    s.points.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return
      parts.push(`<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5" fill="${s.color}"><title>${esc(`${s.label} @ ${p.xTicks[i]}: ${Math.round(v).toLocaleString('en-US')}`)}</title></circle>`)
    })
    if (s.mark !== undefined && s.points[s.mark] !== null) {
      const v = s.points[s.mark] as number
      parts.push(`<circle cx="${x(s.mark).toFixed(1)}" cy="${y(v).toFixed(1)}" r="7" fill="none" stroke="${s.color}" stroke-width="2"/>`)
      const last = s.mark === n - 1
      parts.push(text(x(s.mark) + (last ? -9 : 9), y(v) - 8 - 10 * si, 'knee', `font-size="9" fill="${s.color}"${last ? ' text-anchor="end"' : ''}`))
    }
  })
  const items = [
    ...p.series.map((s) => ({ label: s.label, color: s.color, dash: s.dash })),
    ...(p.hlines ?? []).map((h) => ({ label: h.label, color: h.color, dash: h.dash }))
  ]
  parts.push(legend(plot.x, box.y + box.h - 44, items, plot.w))
  return parts.join('\n')
}

function legend (x0: number, y0: number, items: Array<{ label: string, color: string, dash?: string }>, width = 10000): string {
  const parts: string[] = []
  let x = x0
  let y = y0
  for (const it of items) {
    const w = 30 + it.label.length * 6
    if (x + w > x0 + width) {
      x = x0
      y += 12
    }
    parts.push(`<line x1="${x}" x2="${x + 18}" y1="${y}" y2="${y}" stroke="${it.color}" stroke-width="3" ${it.dash !== undefined ? `stroke-dasharray="${it.dash}"` : ''}/>`)
    parts.push(text(x + 22, y + 4, it.label, 'font-size="10"'))
    x += w
  }
  return parts.join('\n')
}

export function page (width: number, height: number, title: string, subtitle: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    text(16, 24, title, 'font-size="16" font-weight="bold"'),
    text(16, 42, subtitle, 'font-size="11" fill="#555"'),
    ...body,
    '</svg>',
    ''
  ].join('\n')
}
