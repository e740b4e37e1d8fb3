import { test } from 'node:test'
import assert from 'node:assert/strict'
import { asciiChart, formatTable, formatTableRow, htmlReport, progressLine } from '../../src/bench/report.js'
import { benchOptionsFromArgs, buildBenchParser } from '../../src/bench/cli.js'
import { encodeCommand, FORBIDDEN_COMMANDS, parseEndpoint } from '../../src/bench/resp.js'
import { parseUpstreamUrl } from '../../src/config.js'
import type { BenchResult, CellResult } from '../../src/bench/run.js'

function cell (poolSize: number, clients: number, opsPerSec: number): CellResult {
  return { poolSize, clients, waiters: 1, durationSec: 1, ops: opsPerSec, opsPerSec, commandsPerSec: opsPerSec, p50Ms: 0.2, p99Ms: 1.5, maxMs: 3, poolWaitP99Ms: 0.4, poolWaits: 10, poolWaitingMax: 2, upstreamConnections: poolSize, errors: 0, firstError: null, txAborted: 0, wakes: 5, blockTimeouts: 0 }
}

test('the table lines up when rows are printed one at a time, and the chart marks the recommendation', () => {
  const cells = [cell(2, 10, 9000), cell(4, 10, 18000), cell(2, 200, 120000), cell(4, 200, 250000)]
  const table = formatTable(cells).split('\n')
  assert.equal(formatTableRow(cells[3]), table[5])
  assert.equal(formatTable([]).split('\n')[0], table[0])
  assert.equal(new Set(table.slice(0, 6).map((l) => l.length)).size, 1, 'every line as wide as the header')
  const chart = asciiChart(cells, 4)
  assert.match(chart, /^10 clients: throughput by pool size/m)
  assert.match(chart, /pool 4 │█{40}│ {2}18\.0k ops\/s {2}p99 1\.50 ms {2}◀ recommended$/m)
  assert.match(chart, /pool 2 │█{20} {20}│/)
  assert.equal(progressLine(3, 12, 'pool 4 × 50 clients', 30.2, 12), '[###·········] 3/12  pool 4 × 50 clients  ~31 s left')
})

test('the HTML report is one self-contained page with the charts, the recommendation and every cell', () => {
  const result: BenchResult = {
    mode: 'in-process', upstream: 'redis://127.0.0.1:6379/0', target: null, prefix: 'respool-bench:ab:',
    settings: {} as BenchResult['settings'],
    cells: [cell(2, 10, 9000), cell(4, 10, 18000)],
    recommendation: { poolSize: 4, reason: 'Pool size 4 <is> best.', qualifying: [4], p99Unattainable: [] },
    startedAt: 'a', finishedAt: 'b', cleanup: { deleted: 3, left: 0 }
  }
  const html = htmlReport(result)
  assert.equal((html.match(/<svg /g) ?? []).length, 3)
  assert.match(html, /Recommendation: pool size 4/)
  assert.match(html, /Pool size 4 &#60;is&#62; best\./)
  assert.doesNotMatch(html, /<script|https?:\/\/(?!www\.w3\.org)/, 'nothing loaded from elsewhere')
})

test('options: lists, shares and the flags --target excludes', async () => {
  const parse = async (argv: string[]): Promise<ReturnType<typeof benchOptionsFromArgs>> =>
    benchOptionsFromArgs(await buildBenchParser(argv).parseAsync(), new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.slice(2))))
  const defaults = await parse([])
  assert.deepEqual(defaults.clients, [10, 50, 200])
  assert.deepEqual(defaults.poolSizes, [2, 4, 8, 16])
  assert.equal(defaults.yes, false)
  assert.deepEqual((await parse(['--clients', '50,10,50', '--pool-sizes', '8,2'])).clients, [10, 50])
  await assert.rejects(parse(['--pool-sizes', '1,4']), /--pool-sizes: expected comma-separated integers of at least 2/)
  await assert.rejects(parse(['--multi', '0.7', '--blocking', '0.5']), /at most 1/)
  await assert.rejects(parse(['--target', '127.0.0.1:6380', '--pool-sizes', '4']), /cannot be used with --target/)
  await assert.rejects(parse(['--no-such-flag']), /Unknown argument/)
})

test('the RESP writer encodes bulk arrays and refuses the commands the benchmark must never send', () => {
  assert.equal(encodeCommand(['SET', 'k', Buffer.from('v1')]).toString(), '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n')
  for (const name of ['FLUSHALL', 'flushdb', 'CONFIG', 'DEBUG', 'KEYS']) assert.ok(FORBIDDEN_COMMANDS.has(name.toLowerCase()))
  assert.throws(() => encodeCommand(['FLUSHALL']), /never sends FLUSHALL/)
  assert.throws(() => encodeCommand(['config', 'set', 'maxmemory', '1']), /never sends CONFIG/)
  assert.deepEqual(parseEndpoint('127.0.0.1:6380', parseUpstreamUrl), { host: '127.0.0.1', port: 6380, tls: false, db: 0 })
  assert.equal(parseEndpoint('[::1]:6380', parseUpstreamUrl).host, '::1')
  assert.equal(parseEndpoint('redis://:pw@h:1/3', parseUpstreamUrl).db, 3)
})
