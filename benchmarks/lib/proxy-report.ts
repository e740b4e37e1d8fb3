/**
 * The end-to-end benchmark's summary: the targets table (each target met or not, from figures of
 * the same run) and the SVG chart of scenarios (a), (b) and (d).
 */
import type { BigValueResult } from './big-value.js'
import { A_COMBOS, BIG_CLIENTS, BIG_PIPELINES, BIG_POOLS, BIG_VALUE_MB, POOL_SIZE, ROUNDS, SWEEP_POOLS, TESTS, TW_CONNECTIONS } from './proxy-params.js'
import { comboLabel } from './proxy-book.js'
import { fmtUpstream } from './proxy-samples.js'
import type { ARow, LatRow } from './proxy-core.js'
import type { BigRow, SweepCell } from './proxy-sweep.js'
import type { MemResult } from './proxy-memory.js'
import { PALETTE, barPanel, linePanel, page, type LineSeries } from './svg.js'
import { fmtMiB, fmtMs, fmtRatio, type Table } from './table.js'

// ---------------------------------------------------------------------------------------------
// Targets: every figure here is taken from the scenarios' results (their tables), in the same run

const kOps = (n: number): string => Number.isFinite(n) ? `${(n / 1000).toFixed(1)} k` : '—'

export function targetsTable (a: ARow[] | null, big: BigRow[] | null, mem: MemResult | null): Table | null {
  const rows: string[][] = []
  const respool = `respool(${POOL_SIZE})`
  const twName = `twemproxy(${TW_CONNECTIONS})`
  const find = (combo: string, cmd: string, target: string): ARow | undefined => a?.find((r) => r.combo === combo && r.cmd === cmd && r.target === target)
  const cmds = TESTS.map((t) => t.toUpperCase())
  for (const combo of A_COMBOS) {
    const label = comboLabel(combo)
    const pairs = cmds.map((cmd) => ({ cmd, rp: find(label, cmd, respool), tw: find(label, cmd, twName) }))
    if (pairs.some((p) => p.rp === undefined || p.tw === undefined)) continue
    const ratios = pairs.map((p) => (p.rp?.agg.rps ?? NaN) / (p.tw?.agg.rps ?? NaN))
    rows.push([
      `throughput ≥ 1.0× ${twName}, ${label}`,
      `${pairs.map((p, i) => `${p.cmd} ${fmtRatio(ratios[i])}`).join(', ')} (${pairs.map((p) => kOps(p.rp?.agg.rps ?? NaN)).join(' / ')} vs ${pairs.map((p) => kOps(p.tw?.agg.rps ?? NaN)).join(' / ')} ops/s); ${respool} upstream used/open ${fmtUpstream(pairs[0].rp?.agg.upstream ?? null)}`,
      ratios.every((x) => x >= 1) ? 'met' : 'not met'
    ])
    if (combo.clients === 50 && combo.pipeline === 1) {
      rows.push([
        `p99 at ${label} ≤ ${twName}'s`,
        `${pairs.map((p) => fmtMs(p.rp?.agg.p99 ?? NaN)).join(' / ')} ms vs ${pairs.map((p) => fmtMs(p.tw?.agg.p99 ?? NaN)).join(' / ')} ms (${cmds.join(' / ')})`,
        pairs.every((p) => (p.rp?.agg.p99 ?? NaN) <= (p.tw?.agg.p99 ?? NaN)) ? 'met' : 'not met'
      ])
    }
  }
  if (big !== null && big.length > 0) {
    const [small, large] = [BIG_POOLS[0], BIG_POOLS[BIG_POOLS.length - 1]]
    for (const pipeline of BIG_PIPELINES) {
      const rs = big.filter((r) => r.pipeline === pipeline)
      if (rs.length === 0) continue
      const verdict = rs.some((r) => r.tested === false)
        ? `not tested: respool(${large}) used ≤ ${small} connections`
        : rs.every((r) => r.ratio >= 0.9) ? 'met' : 'not met'
      rows.push([
        `${BIG_CLIENTS} clients -P ${pipeline} over ${small} connections ≥ 0.9× over ${large}`,
        `${rs.map((r) => `${r.cmd} ${fmtRatio(r.ratio)}`).join(', ')}; upstream used/open ${fmtUpstream(rs[0].byPool[small]?.upstream ?? null)} (pool ${small}) vs ${fmtUpstream(rs[0].byPool[large]?.upstream ?? null)} (pool ${large})`,
        verdict
      ])
    }
  }
  const idle = mem?.idle.find((r) => r.target === respool)
  if (idle !== undefined) {
    rows.push([`≤ 10 KB RSS per idle client`, `${idle.perClientKiB.toFixed(2)} KB from start, ${idle.marginalKiB.toFixed(2)} KB per further client (${idle.ponged} clients)`, idle.perClientKiB <= 10 ? 'met' : 'not met'])
  }
  const bigRs = (mem?.big ?? []).filter((r) => r.target.startsWith(`${respool},`))
  if (bigRs.length > 0) {
    const growth = (r: BigValueResult): number => Math.max(r.hwmKiB, r.setPeakRssKiB, r.getPeakRssKiB) - r.baselineRssKiB
    const tw = mem?.big.find((r) => r.target.startsWith(`${twName},`))
    rows.push([
      `RSS grows ≤ 64 MB while a ${BIG_VALUE_MB} MB value passes`,
      bigRs.map((r) => `${r.target.slice(respool.length + 2)}: VmHWM +${fmtMiB(r.hwmKiB - r.baselineRssKiB)}${r.setReply === '(not run)' ? '' : `, sampled peak +${fmtMiB(r.setPeakRssKiB - r.baselineRssKiB)} during SET`}, +${fmtMiB(r.getPeakRssKiB - r.baselineRssKiB)} during GET`).join('; ') +
        (tw !== undefined ? ` (${twName}: VmHWM +${fmtMiB(tw.hwmKiB - tw.baselineRssKiB)})` : ''),
      bigRs.every((r) => r.error === undefined && r.getOk && growth(r) <= 64 * 1024) ? 'met' : 'not met'
    ])
  }
  if (rows.length === 0) return null
  return {
    title: 'Targets — every figure is from the tables below, same run',
    headers: ['target', 'measured', ''],
    rows,
    notes: ['the memory target is judged on the larger of VmHWM (the kernel\'s own peak) and the sampled peaks, each minus RSS before']
  }
}

// ---------------------------------------------------------------------------------------------
// Chart

export function chart (a: ARow[] | null, sweep: SweepCell[] | null, big: BigRow[] | null, lat: LatRow[] | null, subtitle: string): string {
  const W = 1200
  const body: string[] = []
  let y = 56
  if (a !== null && a.length > 0) {
    const targets = [...new Set(a.map((r) => r.target))]
    const groups = [...new Set(a.map((r) => `${r.combo} ${r.cmd}`))]
    body.push(barPanel({ x: 0, y, w: W, h: 330 }, {
      title: `(a) ops/s by load — median of ${ROUNDS} round(s); label on respool bars = respool/direct`,
      yLabel: 'ops/s',
      series: targets.map((t, i) => ({ label: t, color: PALETTE[i % PALETTE.length] })),
      groups: groups.map((g) => ({ label: g, values: targets.map((t) => a.find((r) => `${r.combo} ${r.cmd}` === g && r.target === t)?.agg.rps ?? null) })),
      annotations: groups.map((g) => targets.map((t) => {
        const r = a.find((x) => `${x.combo} ${x.cmd}` === g && x.target === t)
        return r !== undefined && t.startsWith('respool') ? fmtRatio(r.ratioDirect) : null
      }))
    }))
    y += 340
  }
  if (sweep !== null && sweep.length > 0) {
    const panels = [...new Set(sweep.map((c) => `${c.pipeline}|${c.cmd}`))]
    const clients = [...new Set(sweep.map((c) => c.clients))]
    panels.forEach((key, i) => {
      const [pipeline, cmd] = key.split('|')
      const cells = sweep.filter((c) => `${c.pipeline}|${c.cmd}` === key)
      const series: LineSeries[] = cells.map((c) => {
        const ci = clients.indexOf(c.clients)
        return {
          label: `respool, ${c.clients} clients`,
          color: PALETTE[ci % PALETTE.length],
          points: SWEEP_POOLS.map((p) => c.byPool[p]?.rps ?? null),
          mark: c.knee === null ? undefined : SWEEP_POOLS.indexOf(c.knee)
        }
      })
      const hlines = cells.flatMap((c) => {
        const color = PALETTE[clients.indexOf(c.clients) % PALETTE.length]
        return [
          { label: `direct, ${c.clients}`, color, value: c.direct?.rps ?? NaN, dash: '2,3' },
          { label: `twemproxy(${TW_CONNECTIONS}), ${c.clients}`, color, value: c.tw?.rps ?? NaN, dash: '8,3,2,3' }
        ]
      })
      const col = i % 2
      body.push(linePanel({ x: col * (W / 2), y, w: W / 2, h: 340 }, {
        title: `(b) ${cmd}, -P ${pipeline}: respool ops/s vs --pool-size (ring = knee)`,
        xLabel: '--pool-size (upstream connections)',
        yLabel: 'ops/s',
        xTicks: SWEEP_POOLS.map(String),
        series,
        hlines
      }))
      if (col === 1 || i === panels.length - 1) y += 350
    })
  }
  if (big !== null && big.length > 0) {
    body.push(barPanel({ x: 0, y, w: W / 2, h: 300 }, {
      title: `(b) ${BIG_CLIENTS} clients: pool ${BIG_POOLS.join(' vs ')} (label = ratio to the largest)`,
      yLabel: 'ops/s',
      series: [{ label: 'direct', color: PALETTE[0] }, ...BIG_POOLS.map((p, i) => ({ label: `respool(${p})`, color: PALETTE[(i + 1) % PALETTE.length] }))],
      groups: big.map((r) => ({ label: `${r.cmd} -P ${r.pipeline}`, values: [r.direct?.rps ?? null, ...BIG_POOLS.map((p) => r.byPool[p]?.rps ?? null)] })),
      annotations: big.map((r) => [null, ...BIG_POOLS.map((p) => fmtRatio((r.byPool[p]?.rps ?? NaN) / (r.byPool[BIG_POOLS[BIG_POOLS.length - 1]]?.rps ?? NaN)))])
    }))
  }
  if (lat !== null && lat.length > 0) {
    const targets = [...new Set(lat.map((r) => r.target))]
    const groups = [...new Set(lat.map((r) => r.cmd))].flatMap((c) => [`${c} p50`, `${c} p99`])
    body.push(barPanel({ x: W / 2, y, w: W / 2, h: 300 }, {
      title: '(d) 1 client -P 1 latency (µs)',
      yLabel: 'µs',
      series: targets.map((t, i) => ({ label: t, color: PALETTE[i % PALETTE.length] })),
      groups: groups.map((g) => {
        const [cmd, p] = g.split(' ')
        return { label: g, values: targets.map((t) => { const r = lat.find((x) => x.cmd === cmd && x.target === t); return r === undefined ? null : (p === 'p50' ? r.agg.p50 : r.agg.p99) * 1000 }) }
      })
    }))
  }
  if ((big !== null && big.length > 0) || (lat !== null && lat.length > 0)) y += 310
  return page(W, y + 10, 'respool benchmark: direct Redis vs respool vs twemproxy', subtitle, body)
}
