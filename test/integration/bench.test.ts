import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { waitFor } from '../helpers/wait.js'
import { RespConnection } from '../../src/bench/resp.js'
import { parseUpstreamUrl } from '../../src/config.js'
import type { BenchResult } from '../../src/bench/run.js'

const BIN = fileURLToPath(new URL('../../../bin/respool.js', import.meta.url))
/** Tiny cells: the point is the plumbing and the cleanup, not the numbers. */
const TINY = ['--clients', '2,5', '--duration', '0.4', '--warmup', '0.1', '--keys', '20', '--multi', '0.2', '--blocking', '0.2']

interface Run { child: ChildProcess, stdout: () => string, stderr: () => string, exited: Promise<number | null> }

function bench (args: string[]): Run {
  const child = spawn(process.execPath, [BIN, 'bench', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  return { child, stdout: () => out, stderr: () => err, exited }
}

async function keysIn (url: string): Promise<string[]> {
  const conn = await RespConnection.open(parseUpstreamUrl(url))
  try {
    const reply = await conn.call('SCAN', '0', 'COUNT', '10000')
    return (reply as [string, string[]])[1]
  } finally {
    await conn.close()
  }
}

test('respool bench --json: every cell of the sweep, a recommendation, an HTML report, and nothing left in Redis', { timeout: 30000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const dir = mkdtempSync(join(tmpdir(), 'respool-bench-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })
  const report = join(dir, 'report.html')
  const r = bench(['--upstream', redis.url, ...TINY, '--pool-sizes', '2,3', '--target-p99', '1000', '--json', '--report', report])
  assert.equal(await r.exited, 0, r.stderr())
  const result = JSON.parse(r.stdout()) as BenchResult
  assert.equal(result.mode, 'in-process')
  assert.deepEqual(result.cells.map((c) => [c.poolSize, c.clients]), [[2, 2], [2, 5], [3, 2], [3, 5]])
  for (const c of result.cells) {
    assert.ok(c.ops > 0 && c.opsPerSec > 0, `cell ${c.poolSize}×${c.clients} did work`)
    assert.equal(c.errors, 0, `cell ${c.poolSize}×${c.clients}: ${c.firstError ?? ''}`)
    assert.ok(c.p99Ms >= c.p50Ms && c.p50Ms > 0)
    assert.equal(c.waiters, 1)
    assert.ok(c.poolWaitP99Ms !== null && c.poolWaits !== null && c.poolWaits > 0, 'WATCH transactions waited for pins')
    assert.ok(c.upstreamConnections !== null && c.upstreamConnections >= 1 && c.upstreamConnections <= c.poolSize, `upstream connections ${c.upstreamConnections ?? 'n/a'} within pool ${c.poolSize}`)
  }
  assert.ok(result.recommendation.poolSize === 2 || result.recommendation.poolSize === 3)
  assert.ok(result.recommendation.reason.length > 20)
  assert.match(result.prefix, /^respool-bench:[0-9a-f]{8}:$/)
  assert.deepEqual(result.cleanup, { deleted: result.cleanup.deleted, left: 0 })
  assert.ok(result.cleanup.deleted >= 20)
  const html = readFileSync(report, 'utf8')
  assert.match(html, /Recommendation: pool size [23]/)
  assert.equal((html.match(/<svg /g) ?? []).length, 3)
  assert.deepEqual(await keysIn(redis.url), [])
})

test('respool bench --target measures a running respool: its pool size and pin waits come from RESPOOL POOLS/STATS', { timeout: 30000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 3 })
  after(async () => { await proxy.close() })
  const r = bench(['--target', `127.0.0.1:${proxy.address.port}`, ...TINY])
  assert.equal(await r.exited, 0, r.stderr())
  assert.match(r.stdout(), /^respool bench: the respool at 127\.0\.0\.1:\d+; keys under respool-bench:[0-9a-f]{8}:$/m)
  assert.match(r.stdout(), /^pool +clients +ops\/s +p50 ms +p99 ms +pool-wait p99 ms +waiting max +upstream conns +errors$/m)
  assert.match(r.stdout(), /^3 +5 \(1 in blpop\) +\S+ +[\d.]+ +[\d.]+ +[\d.]+ +\d+ +\d+ +0$/m)
  assert.match(r.stdout(), /^Recommendation: --pool-size 3\. Only pool size 3 was measured/m)
  assert.match(r.stdout(), /^Cleanup: deleted \d+ keys under respool-bench:[0-9a-f]{8}:, none left\.$/m)
  assert.deepEqual(await keysIn(redis.url), [])
})

test('respool bench refuses a database that holds other keys unless --yes, and then touches only its own', { timeout: 30000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const conn = await RespConnection.open(parseUpstreamUrl(redis.url))
  await conn.call('SET', 'app:user:1', 'alice')
  const refused = bench(['--upstream', redis.url, ...TINY, '--pool-sizes', '2'])
  assert.equal(await refused.exited, 2)
  assert.match(refused.stderr(), /^respool bench: database 0 of redis:\/\/127\.0\.0\.1:\d+\/0 holds 1 key\. .*pass --yes to run anyway$/m)
  assert.deepEqual(await keysIn(redis.url), ['app:user:1'], 'nothing written when refused')
  const allowed = bench(['--upstream', redis.url, ...TINY, '--pool-sizes', '2', '--yes', '--json'])
  assert.equal(await allowed.exited, 0, allowed.stderr())
  assert.deepEqual(await keysIn(redis.url), ['app:user:1'])
  assert.equal(await conn.call('GET', 'app:user:1'), 'alice')
  await conn.close()
})

test('an interrupted respool bench (SIGINT mid-run) deletes its keys and exits 130', { timeout: 30000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const r = bench(['--upstream', redis.url, '--clients', '5', '--pool-sizes', '2,4', '--duration', '20', '--warmup', '0.1', '--keys', '50', '--blocking', '0.2'])
  // Mid-run: the keys are written and the load is on (the waiters' lists and the transactions' counter exist).
  await waitFor(async () => (await keysIn(redis.url)).some((k) => k.endsWith(':tx')), 'load running', 10000)
  r.child.kill('SIGINT')
  assert.equal(await r.exited, 130, r.stderr())
  assert.match(r.stderr(), /SIGINT: stopping and deleting the benchmark's keys/)
  assert.match(r.stderr(), /interrupted; the benchmark's keys were deleted/)
  assert.deepEqual(await keysIn(redis.url), [])
})
