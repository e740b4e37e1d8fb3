import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { setTimeout as delay } from 'node:timers/promises'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { Redis } from 'ioredis'
import { startProxy } from '../helpers/proxy.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'
import { runProgram, type ProgramResult } from '../helpers/run-program.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// redis-cli and redis-benchmark (Debian redis-tools): real clients nobody here wrote.

let redis: RedisServer
let proxy: ProxyServer
const POOL_SIZE = 4

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: POOL_SIZE })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

async function cli (args: string[], input: string | Buffer = '', port = proxy.address.port): Promise<string> {
  const r = await runProgram('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { input })
  assert.equal(r.code, 0, `redis-cli ${args.join(' ')} exited ${String(r.code ?? r.signal)}: ${r.stderr}`)
  return r.stdout.toString('latin1')
}

test('redis-cli: plain commands, errors, repeats and a database chosen with -n', { timeout: 30000 }, async () => {
  assert.equal(await cli(['ping']), 'PONG\n')
  assert.equal(await cli(['set', 'cli:greeting', 'hello world']), 'OK\n')
  assert.equal(await cli(['get', 'cli:greeting']), 'hello world\n')
  assert.equal(await cli(['get', 'cli:missing']), '\n')
  assert.equal(await cli(['incr', 'cli:greeting']), 'ERR value is not an integer or out of range\n\n')
  assert.equal(await cli(['-r', '3', 'incr', 'cli:counter']), '1\n2\n3\n')
  assert.equal(await cli(['rpush', 'cli:list', 'a', 'b', 'c']), '3\n')
  assert.equal(await cli(['lrange', 'cli:list', '0', '-1']), 'a\nb\nc\n')
  assert.equal(await cli(['--csv', 'lrange', 'cli:list', '0', '-1']), '"a","b","c"\n')
  assert.equal(await cli(['exists', 'cli:greeting', 'cli:list', 'cli:nothing']), '2\n')

  // Several commands on stdin, one per line (no --pipe): answered in order on one connection.
  assert.equal(await cli([], 'SET cli:a 1\nINCR cli:a\nINCRBY cli:a 40\nGET cli:a\nNOSUCHCOMMAND x\nDEL cli:a\n'),
    "OK\n2\n42\n42\nERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'x' \n\n1\n")

  // -n selects a database; keys there are invisible from db 0 and vice versa.
  assert.equal(await cli(['-n', '3', 'set', 'cli:db', 'three']), 'OK\n')
  assert.equal(await cli(['set', 'cli:db', 'zero']), 'OK\n')
  assert.equal(await cli(['-n', '3', 'get', 'cli:db']), 'three\n')
  assert.equal(await cli(['get', 'cli:db']), 'zero\n')
  assert.equal(await cli(['-n', '3', 'get', 'cli:db'], '', redis.port), 'three\n')
  assert.equal(await cli(['-n', '3', 'dbsize']), '1\n')

  // RESP3 (-3 sends HELLO 3): a map reply is printed as a map, exactly as Redis prints it.
  assert.equal(await cli(['hset', 'cli:h', 'a', '1', 'b', '2']), '2\n')
  const viaProxy = await cli(['-3', '--no-raw', 'hgetall', 'cli:h'])
  assert.equal(viaProxy, '1# "a" => "1"\n2# "b" => "2"\n')
  assert.equal(viaProxy, await cli(['-3', '--no-raw', 'hgetall', 'cli:h'], '', redis.port))
  assert.equal(await cli(['-3', '--no-raw', 'zscore', 'cli:nozset', 'x']), '(nil)\n')
})

test('redis-cli: a binary value (every byte value, CR LF, NUL) is stored and read back byte for byte', { timeout: 30000 }, async () => {
  const value = Buffer.alloc(256 + 4)
  for (let i = 0; i < 256; i++) value[i] = i
  value.write('\r\n\r\n', 256, 'latin1')
  // -x reads the last argument from stdin, unmodified.
  assert.equal(await cli(['-x', 'set', 'cli:bin'], value), 'OK\n')
  assert.equal(await cli(['strlen', 'cli:bin']), `${value.length}\n`)
  const raw = await runProgram('redis-cli', ['-p', String(proxy.address.port), '--raw', 'get', 'cli:bin'])
  assert.equal(raw.code, 0, raw.stderr)
  assert.deepEqual(raw.stdout, Buffer.concat([value, Buffer.from('\n')]))
  // The escaped form is identical to what Redis itself gives.
  const escaped = await cli(['--no-raw', 'get', 'cli:bin'])
  assert.ok(escaped.startsWith('"\\x00\\x01\\x02'), escaped.slice(0, 40))
  assert.equal(escaped, await cli(['--no-raw', 'get', 'cli:bin'], '', redis.port))
  // And the bytes in Redis are the bytes sent.
  const direct = await runProgram('redis-cli', ['-p', String(redis.port), '--raw', 'get', 'cli:bin'])
  assert.deepEqual(direct.stdout, raw.stdout)
})

test('redis-cli --pipe: 5000 commands of mass insertion, all answered, no errors', { timeout: 30000 }, async () => {
  const parts: string[] = []
  for (let i = 0; i < 5000; i++) {
    const key = `cli:pipe:${i}`
    const val = `v${i}`
    parts.push(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${val.length}\r\n${val}\r\n`)
  }
  const r = await runProgram('redis-cli', ['-p', String(proxy.address.port), '--pipe'], { input: parts.join('') })
  const out = r.stdout.toString()
  assert.equal(r.code, 0, `${out} ${r.stderr}`)
  assert.match(out, /errors: 0, replies: 5000/)
  assert.equal(await cli(['get', 'cli:pipe:4999']), 'v4999\n')
  assert.equal(await cli(['get', 'cli:pipe:0']), 'v0\n')
})

test('redis-cli subscribe receives what another redis-cli publishes', { timeout: 30000 }, async () => {
  const child = spawn('redis-cli', ['-p', String(proxy.address.port), 'subscribe', 'cli:chan'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  try {
    await waitFor(() => out === 'subscribe\ncli:chan\n1\n', 'the subscribe confirmation')
    assert.equal(await cli(['publish', 'cli:chan', 'hello subscriber']), '1\n')
    await waitFor(() => out.length > 'subscribe\ncli:chan\n1\n'.length && out.endsWith('\n') && out.split('\n').length >= 7, 'the message')
    assert.equal(out, 'subscribe\ncli:chan\n1\nmessage\ncli:chan\nhello subscriber\n')
  } finally {
    const exited = new Promise((resolve) => { child.on('close', resolve) })
    child.kill('SIGKILL')
    await exited
  }
  // The subscriber's disconnect released its pinned connection: nobody is subscribed any more.
  await waitFor(async () => (await cli(['pubsub', 'numsub', 'cli:chan'], '', redis.port)) === 'cli:chan\n0\n', 'the subscription to end')
})

/** Final per-test lines of `redis-benchmark -q` (progress lines are separated by \r). */
function benchmarkLines (output: string): string[] {
  return output.split(/[\r\n]/).map((l) => l.trim()).filter((l) => l !== '' && !/rps=/.test(l))
}

/**
 * Runs redis-benchmark through a respool of its own, in front of a Redis that refuses any
 * connection beyond the pool and the test's one admin connection (--maxclients); `check` then
 * looks at Redis through that admin connection.
 */
async function benchmark (args: string[], expectedTests: string[], check: (admin: Redis) => Promise<void>): Promise<void> {
  const bounded = await startBoundedRedis(POOL_SIZE + 1)
  after(async () => { await bounded.stop() })
  // No idle connection is closed and replaced during the run: Redis may not have freed a
  // closed one yet when its replacement arrives, which is not a connection more.
  const bench = await startProxy({ upstream: bounded.redis.url, poolSize: POOL_SIZE, upstreamIdleTimeoutMs: 600_000 })
  after(async () => { await bench.destroy() })
  let maxSeen = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      maxSeen = Math.max(maxSeen, await bounded.upstreamConnections())
      await delay(50) // a sample now and then, for the report; Redis enforces the bound
    }
  })()
  let r: ProgramResult
  try {
    r = await runProgram('redis-benchmark', ['-h', '127.0.0.1', '-p', String(bench.address.port), ...args], { timeoutMs: 120000 })
  } finally {
    sampling = false
    await sampler
  }
  const output = r.stdout.toString() + r.stderr
  assert.equal(r.code, 0, `redis-benchmark exited ${String(r.code ?? r.signal)}: ${output}`)
  assert.doesNotMatch(output, /error/i)
  assert.doesNotMatch(output, /\bERR\b/)
  const lines = benchmarkLines(r.stdout.toString())
  for (const line of lines) {
    assert.match(line, /^[^:]+: [\d.]+ requests per second, p50=[\d.]+ msec$/, `unexpected benchmark line: ${line}`)
    const rps = Number(/: ([\d.]+) requests/.exec(line)?.[1])
    assert.ok(rps > 0, line)
  }
  assert.deepEqual(lines.map((l) => l.slice(0, l.lastIndexOf(': ', l.indexOf(' requests per second')))), expectedTests)
  assert.ok(maxSeen <= POOL_SIZE, `upstream connections seen: ${maxSeen}`)
  await bounded.assertNoneRejected()
  await check(bounded.admin)
}

test('redis-benchmark -q -n 20000 (the default test set) through respool: every test reports requests per second, no errors', { timeout: 180000 }, async () => {
  await benchmark(['-q', '-n', '20000'], [
    'PING_INLINE', 'PING_MBULK', 'SET', 'GET', 'INCR', 'LPUSH', 'RPUSH', 'LPOP', 'RPOP', 'SADD', 'HSET', 'SPOP',
    'ZADD', 'ZPOPMIN', 'LPUSH (needed to benchmark LRANGE)', 'LRANGE_100 (first 100 elements)',
    'LRANGE_300 (first 300 elements)', 'LRANGE_500 (first 500 elements)', 'LRANGE_600 (first 600 elements)',
    'MSET (10 keys)'
  ], async (admin) => {
    // The benchmark's own keys landed in Redis with its default 3-byte payload.
    assert.equal(await admin.strlen('key:__rand_int__'), 3)
    assert.notEqual(await admin.llen('mylist'), 0)
  })
})

test('redis-benchmark -q -n 5000 -c 50 -P 16 -t set,get through respool', { timeout: 120000 }, async () => {
  await benchmark(['-q', '-n', '5000', '-c', '50', '-P', '16', '-t', 'set,get'], ['SET', 'GET'], async (admin) => {
    assert.equal(await admin.strlen('key:__rand_int__'), 3)
  })
})
