import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import tls from 'node:tls'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { startRedis, freePort, type RedisServer } from '../helpers/redis-server.js'
import { startRedisCluster } from '../helpers/redis-cluster.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'

const BIN = fileURLToPath(new URL('../../../bin/respool.js', import.meta.url))

/** Every process a test starts carries this mark, so the test can prove none outlives respool. */
const MARK = `respool-workers-test-${randomUUID()}`

interface Running { child: ChildProcess, stdout: () => string, stderr: () => string }

/** `detached`: in a process group of its own, so a test can signal the group as Ctrl-C does. */
function run (args: string[], detached = false): Running {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, WORKERS_TEST_MARK: MARK }, stdio: ['ignore', 'pipe', 'pipe'], detached })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  after(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
    for (const pid of markedProcesses()) process.kill(pid, 'SIGKILL')
  })
  return { child, stdout: () => out, stderr: () => err }
}

/** Processes still running with this file's mark in their environment. */
function markedProcesses (): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(MARK)) pids.push(Number(entry))
    } catch {}
  }
  return pids
}

function logLines (r: Running): Array<Record<string, unknown>> {
  return r.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** The primary's start line (after every worker listens): the real port. */
async function listeningPort (r: Running): Promise<number> {
  await waitFor(() => /with \d+ workers/.test(r.stdout()), `start line; stdout=${r.stdout()} stderr=${r.stderr()}`, 15000)
  const line = logLines(r).find((l) => /with \d+ workers/.test(String(l.msg))) as Record<string, unknown>
  return Number(/listening on (?:tls:\/\/)?127\.0\.0\.1:(\d+)/.exec(String(line.msg))?.[1])
}

/** The pid of each worker, from their own start lines (the latest one per worker). */
function workerPids (r: Running): Map<number, number> {
  const pids = new Map<number, number>()
  for (const l of logLines(r)) if (typeof l.worker === 'number' && String(l.msg).includes('listening on')) pids.set(l.worker, l.pid as number)
  return pids
}

async function clientId (c: RawClient): Promise<number> {
  c.write(cmd('CLIENT', 'ID'))
  return Number(/^:(\d+)\r\n$/.exec(await new FrameReader(c).next(5000))?.[1])
}

/**
 * At least `least` clients, more until both workers have one: round-robin hands a connection to
 * the next worker that is free, so a busy machine may give one worker two in a row.
 */
async function clientsOnBoth (port: number, least: number): Promise<{ clients: RawClient[], ids: number[] }> {
  const clients: RawClient[] = []
  const ids: number[] = []
  after(() => { for (const c of clients) c.close() })
  while (clients.length < least || !(ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0))) {
    assert.ok(clients.length < 40, `40 connections, all on one worker: ${ids.join(',')}`)
    const c = await RawClient.connect(port)
    clients.push(c)
    ids.push(await clientId(c))
  }
  return { clients, ids }
}

async function scrape (port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  assert.equal(res.status, 200, await res.clone().text())
  return await res.text()
}

/** The sum of a metric's series (every label set). */
function metricSum (text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`).exec(line)
    if (m !== null) sum += Number(m[1])
  }
  return sum
}

/** Client connections Redis sees, other than the one asking. */
async function upstreamConnections (direct: Redis): Promise<number> {
  const list = await direct.client('LIST') as string
  const self = await direct.client('ID') as number
  return list.split('\n').filter((l) => l.startsWith('id=') && !l.startsWith(`id=${self} `)).length
}

async function redis (): Promise<RedisServer> {
  const server = await startRedis()
  after(async () => { await server.stop() })
  return server
}

/** A config file in a folder of its own, removed after the test. */
function tempConfigFile (): string {
  const dir = mkdtempSync(join(tmpdir(), 'respool-workers-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })
  return join(dir, 'respool.json')
}

/** A mixed pipeline on keys of its own: strings with CR LF and NUL, lists, hashes, sorted sets, a transaction, a script, errors. */
function workload (i: number): Buffer[] {
  const k = `w:${i}`
  const binary = Buffer.from(`v\r\n\0${i}\xff`, 'latin1')
  return [
    cmd('SET', `${k}:s`, binary), cmd('GET', `${k}:s`), cmd('INCRBY', `${k}:n`, String(i)), cmd('INCR', `${k}:s`),
    cmd('RPUSH', `${k}:l`, 'a', 'b', binary), cmd('LRANGE', `${k}:l`, '0', '-1'), cmd('HSET', `${k}:h`, 'f', 'x', 'g', binary),
    cmd('HGETALL', `${k}:h`), cmd('ZADD', `${k}:z`, '1.5', 'a', '2', 'b'), cmd('ZRANGE', `${k}:z`, '0', '-1', 'WITHSCORES'),
    cmd('MULTI'), cmd('INCR', `${k}:n`), cmd('GET', `${k}:s`), cmd('LPOP', `${k}:l`), cmd('EXEC'),
    cmd('EVAL', "return {1, 'x', redis.call('GET', KEYS[1])}", '1', `${k}:s`), cmd('GET', `${k}:missing`),
    cmd('ECHO', binary), cmd('NOSUCHCOMMAND'), cmd('DEL', `${k}:s`), cmd('EXISTS', `${k}:s`), cmd('PING')
  ]
}

async function replies (c: RawClient, commands: Buffer[]): Promise<string> {
  c.write(Buffer.concat(commands))
  return (await new FrameReader(c).take(commands.length, 10000)).join('')
}

test('--workers 2: 20 clients get byte-exact replies, land on both workers, and see client IDs unique across them', { timeout: 60000 }, async () => {
  const behind = await redis()
  const direct = await redis()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--log-level', 'info'])
  const port = await listeningPort(r)
  const ids: number[] = []
  await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const viaProxy = await RawClient.connect(port)
    const viaRedis = await RawClient.connect(direct.port)
    try {
      ids.push(await clientId(viaProxy))
      const want = await replies(viaRedis, workload(i))
      viaProxy.write(Buffer.concat(workload(i)))
      assert.equal(await viaProxy.readExactly(want, { timeoutMs: 10000 }), want, `client ${i}`)
    } finally {
      viaProxy.close()
      viaRedis.close()
    }
  }))
  // Worker k of 2 hands out k+1, k+3, …: both parities mean both workers took clients.
  assert.equal(new Set(ids).size, 20, `IDs unique: ${ids.join(',')}`)
  assert.ok(ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0), `both workers: ${ids.join(',')}`)
  // CLIENT LIST and RESPOOL CLIENTS are scoped to the worker the client is on.
  // Round-robin hands each connection to the next worker that is free: open a few until both answered.
  const opened: RawClient[] = []
  after(() => { for (const c of opened) c.close() })
  const byParity = new Map<number, { client: RawClient, id: number }>()
  while (byParity.size < 2 && opened.length < 20) {
    const c = await RawClient.connect(port)
    opened.push(c)
    const id = await clientId(c)
    if (!byParity.has(id % 2)) byParity.set(id % 2, { client: c, id })
  }
  const { client: a, id: idA } = byParity.get(1) as { client: RawClient, id: number }
  const { id: idB } = byParity.get(0) as { client: RawClient, id: number }
  a.write(cmd('CLIENT', 'LIST'))
  const list = await new FrameReader(a).next(5000)
  assert.match(list, new RegExp(`id=${idA} `))
  assert.doesNotMatch(list, new RegExp(`id=${idB} `))
})

test('--workers 2: Redis never sees more connections than --pool-size in all, under blocking commands and transactions', { timeout: 60000 }, async () => {
  const behind = await redis()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--acquire-timeout', '10000'])
  const port = await listeningPort(r)
  const direct = new Redis({ port: behind.port, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  const clients = Array.from({ length: 24 }, () => new Redis({ port, maxRetriesPerRequest: 0, lazyConnect: false }))
  after(() => { for (const c of clients) c.disconnect() })
  let most = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      most = Math.max(most, await upstreamConnections(direct))
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  const deadline = Date.now() + 3000
  let pushed = 0
  let popped = 0
  let transactions = 0
  await Promise.all(clients.map(async (c, i) => {
    while (Date.now() < deadline) {
      if (i % 3 === 0) {
        // Blocking: parked (watchers), and pinned (BLMPOP with COUNT parks too; WAIT pins).
        const got = await c.blpop(`q:${i % 4}`, 0.05)
        if (got !== null) popped++
      } else if (i % 3 === 1) {
        const res = await c.multi().incr('tx').lpush(`q:${i % 4}`, 'job').exec()
        assert.ok(res !== null)
        transactions++
        pushed++
      } else {
        await c.watch('w')
        await c.multi().set('w', String(i)).exec()
        await c.wait(0, 5)
      }
    }
  }))
  sampling = false
  await sampler
  assert.ok(transactions > 0 && pushed > 0, 'the load ran')
  assert.ok(popped > 0, 'blocking commands were served')
  assert.ok(most <= 6, `Redis saw ${most} connections from respool; --pool-size 6 in all`)
  // One worker alone holds at most 3: more means both workers used their share.
  assert.ok(most > 3, `both workers connected upstream (most seen ${most})`)
})

test('--workers 2: /metrics on the primary adds up both workers; /readyz needs every worker', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--metrics-port', String(metricsPort)])
  const port = await listeningPort(r)
  const { clients, ids } = await clientsOnBoth(port, 6)
  let sent = ids.length // each sent CLIENT ID
  for (const [i, c] of clients.entries()) {
    const commands = Array.from({ length: 10 + i }, (_, n) => n % 2 === 0 ? cmd('SET', `m:${i}:${n}`, 'x') : cmd('PING'))
    await replies(c, commands)
    sent += commands.length
  }
  assert.ok(ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0), `clients on both workers: ${ids.join(',')}`)
  const text = await scrape(metricsPort)
  assert.equal(metricSum(text, 'respool_commands_total'), sent, 'commands counted over both workers')
  assert.equal(metricSum(text, 'respool_clients'), clients.length)
  assert.equal(metricSum(text, 'respool_pool_max_connections'), 6, 'the shares add up to --pool-size')
  assert.equal(metricSum(text, 'respool_workers'), 2)
  assert.equal(metricSum(text, 'respool_worker_restarts_total'), 0)
  assert.match(text, /^respool_command_duration_seconds_count \d+/m)
  assert.equal(metricSum(text, 'respool_command_duration_seconds_count') >= sent - 6, true, 'histograms add up too')
  const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`)
  assert.equal(ready.status, 200)
  assert.match(await ready.text(), /ready \(2 workers\)/)
  // The workers do not serve the metrics port themselves: one listener, the primary's.
  assert.equal(logLines(r).filter((l) => /listening on/.test(String(l.msg))).length, 3)
})

test('--workers 2: SIGTERM drains every worker (in-flight commands answered) and the primary exits 0', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--metrics-port', String(metricsPort), '--shutdown-grace', '5000'])
  const port = await listeningPort(r)
  const { clients } = await clientsOnBoth(port, 4)
  for (const c of clients) c.write(cmd('BLPOP', 'drain:q', '1'))
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_parked_commands') === clients.length, 'every BLPOP parked', 5000)
  const started = Date.now()
  const exited = once(r.child, 'exit')
  r.child.kill('SIGTERM')
  // In flight when the signal came: each is answered (its timeout ran out, nothing pushed).
  for (const c of clients) assert.equal(await c.readUntilClose(5000), '*-1\r\n')
  const [code] = await exited
  assert.equal(code, 0)
  assert.ok(Date.now() - started < 5000 + 2000, 'within the grace')
  await waitFor(() => markedProcesses().length === 0, 'no worker left running', 5000)
})

test('--workers 2: a worker killed with SIGKILL is replaced; clients of the other worker are not disturbed', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--metrics-port', String(metricsPort)])
  const port = await listeningPort(r)
  const { clients, ids } = await clientsOnBoth(port, 8)
  const onFirst = clients.filter((_, i) => ids[i] % 2 === 1) // worker 0: 1, 3, 5 …
  const onSecond = clients.filter((_, i) => ids[i] % 2 === 0)
  assert.ok(onFirst.length > 0 && onSecond.length > 0, `both workers: ${ids.join(',')}`)
  // Bystanders on worker 0 keep a pipeline going across the kill, checking every reply.
  let running = true
  let rounds = 0
  const bystanders = Promise.all(onFirst.map(async (c, i) => {
    const reader = new FrameReader(c)
    for (let n = 0; running; n++) {
      c.write(Buffer.concat([cmd('SET', `by:${i}`, String(n)), cmd('GET', `by:${i}`)]))
      assert.deepEqual(await reader.take(2, 5000), ['+OK\r\n', `$${String(n).length}\r\n${n}\r\n`])
      rounds++
    }
  }))
  const victim = workerPids(r).get(1) as number
  assert.ok(victim > 0)
  process.kill(victim, 'SIGKILL')
  // Its clients lose their connections.
  for (const c of onSecond) await c.readUntilClose(5000)
  await waitFor(() => logLines(r).some((l) => l.msg === 'replacement worker listening'), 'the replacement', 15000)
  const before = rounds
  await waitFor(() => rounds > before + 20, 'bystanders still served', 5000)
  running = false
  await bystanders
  const text = await scrape(metricsPort)
  assert.equal(metricSum(text, 'respool_worker_restarts_total'), 1)
  assert.equal(metricSum(text, 'respool_workers'), 2)
  assert.ok(logLines(r).some((l) => l.worker === 1 && l.signal === 'SIGKILL' && /worker died/.test(String(l.msg))), 'the death is logged')
  assert.notEqual(workerPids(r).get(1), victim)
  // New clients are served by both workers again.
  const { clients: fresh } = await clientsOnBoth(port, 4)
  for (const c of fresh) assert.deepEqual(await replies(c, [cmd('PING')]), '+PONG\r\n')
})

test('--workers: TLS and a unix socket are served by every worker', { timeout: 60000 }, async () => {
  const behind = await redis()
  const dir = mkdtempSync(join(tmpdir(), 'respool-workers-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })
  const key = join(dir, 'key.pem')
  const cert = join(dir, 'cert.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' })
  const socketPath = join(dir, 'respool.sock')
  writeFileSync(socketPath, 'stale') // a stale file from a crashed run is removed once, by the primary
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '4', '--upstream', behind.url, '--tls-cert', cert, '--tls-key', key, '--unix-socket', socketPath])
  const port = await listeningPort(r)
  const overTls = async (): Promise<string> => {
    const socket = tls.connect({ port, host: '127.0.0.1', ca: readFileSync(cert) })
    await once(socket, 'secureConnect')
    socket.write(Buffer.concat([cmd('CLIENT', 'ID'), cmd('SET', 'tls', 'yes'), cmd('GET', 'tls')]))
    let got = ''
    socket.on('data', (d: Buffer) => { got += d.toString('latin1') })
    await waitFor(() => got.endsWith('$3\r\nyes\r\n'), `TLS replies: ${got}`, 5000)
    socket.destroy()
    return got
  }
  const tlsIds: number[] = []
  while (new Set(tlsIds.map((id) => id % 2)).size < 2 && tlsIds.length < 20) tlsIds.push(Number(/^:(\d+)\r\n\+OK\r\n/.exec(await overTls())?.[1]))
  assert.equal(new Set(tlsIds.map((id) => id % 2)).size, 2, `TLS on both workers: ${tlsIds.join(',')}`)
  const overSocket = async (): Promise<number> => {
    const socket = net.connect(socketPath)
    await once(socket, 'connect')
    socket.write(Buffer.concat([cmd('CLIENT', 'ID'), cmd('PING')]))
    let got = ''
    socket.on('data', (d: Buffer) => { got += d.toString('latin1') })
    await waitFor(() => got.endsWith('+PONG\r\n'), `socket replies: ${got}`, 5000)
    socket.destroy()
    return Number(/^:(\d+)\r\n/.exec(got)?.[1])
  }
  const socketIds: number[] = []
  while (new Set(socketIds.map((id) => id % 2)).size < 2 && socketIds.length < 20) socketIds.push(await overSocket())
  assert.equal(new Set(socketIds.map((id) => id % 2)).size, 2, `unix socket on both workers: ${socketIds.join(',')}`)
})

test('--workers: a pool too small to split, or a port in use, stops respool with a clear error and no process left', { timeout: 60000 }, async () => {
  const behind = await redis()
  const small = run(['--port', '0', '--workers', '3', '--pool-size', '5', '--upstream', behind.url])
  const [code] = await once(small.child, 'exit')
  assert.equal(code, 2)
  assert.match(small.stderr(), /^respool: pool-size: 5 is too small for 3 workers: each worker needs at least 2 upstream connections of its own .*--pool-size 6 at least, or fewer --workers/m)
  const tooMany = run(['--port', '0', '--workers', '65', '--upstream', behind.url])
  assert.equal((await once(tooMany.child, 'exit'))[0], 2)
  assert.match(tooMany.stderr(), /^respool: workers: must be an integer from 1 to 64, got 65$/m)
  // Found only when the workers start: the port is taken.
  const taken = net.createServer()
  taken.listen(0, '127.0.0.1')
  await once(taken, 'listening')
  after(() => { taken.close() })
  const busy = run(['--port', String((taken.address() as net.AddressInfo).port), '--workers', '2', '--pool-size', '4', '--upstream', behind.url])
  const [busyCode] = await once(busy.child, 'exit')
  assert.equal(busyCode, 1)
  assert.match(busy.stderr(), /^respool: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/m)
  await waitFor(() => markedProcesses().length === 0, `no process left: ${markedProcesses().join(',')}`, 5000)
})

test('--workers 2: RESPOOL PAUSE and RESUME on one worker hold and release every worker; SIGHUP reloads every worker', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const configFile = tempConfigFile()
  writeFileSync(configFile, JSON.stringify({ 'pool-size': 6 }))
  const r = run(['--port', '0', '--workers', '2', '--config', configFile, '--upstream', behind.url, '--metrics-port', String(metricsPort), '--admin-password', 'adm'])
  const port = await listeningPort(r)
  const { clients, ids } = await clientsOnBoth(port, 4)
  while (ids.filter((id) => id % 2 === 0).length < 2) {
    const c = await RawClient.connect(port)
    clients.push(c)
    ids.push(await clientId(c))
  }
  const admin = clients[ids.findIndex((id) => id % 2 === 1)] // on worker 0
  const onSecond = clients.filter((_, i) => ids[i] % 2 === 0) // on worker 1
  const [other, watcher] = onSecond
  const otherId = ids[clients.indexOf(other)]
  assert.ok(admin !== undefined && other !== undefined && watcher !== undefined, `both workers: ${ids.join(',')}`)
  assert.equal(await replies(admin, [cmd('RESPOOL', 'AUTH', 'adm'), cmd('RESPOOL', 'PAUSE')]), '+OK\r\n+OK\r\n')
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_paused') === 2, 'both workers paused', 5000)
  other.write(cmd('SET', 'paused', 'held'))
  // Held on the other worker (RESPOOL CLIENTS there shows it pending): its reply comes only
  // after RESUME, sent on the first worker.
  assert.equal(await replies(watcher, [cmd('RESPOOL', 'AUTH', 'adm')]), '+OK\r\n')
  await waitFor(async () => new RegExp(`id=${otherId} .* pending=1 `).test(await replies(watcher, [cmd('RESPOOL', 'CLIENTS')])), 'the SET held on worker 1', 5000)
  assert.equal(other.buffered.length, 0, 'the command is held')
  assert.equal(await replies(admin, [cmd('RESPOOL', 'RESUME')]), '+OK\r\n')
  assert.equal(await other.readExactly('+OK\r\n'), '+OK\r\n')
  assert.equal(metricSum(await scrape(metricsPort), 'respool_paused'), 0)
  // SIGHUP to the primary: every worker reads the new total and takes its share.
  writeFileSync(configFile, JSON.stringify({ 'pool-size': 10 }))
  r.child.kill('SIGHUP')
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_pool_max_connections') === 10, 'pool size 10 in all after SIGHUP', 5000)
  assert.equal(logLines(r).filter((l) => l.msg === 'configuration reloaded').length, 2)
})

test('--workers 2 in cluster mode: a share too small for the cluster stops respool at start with the total it needs', { timeout: 60000 }, async () => {
  const cluster = await startRedisCluster(3)
  after(async () => { await cluster.stop() })
  const seed = `127.0.0.1:${cluster.nodes[0].port}`
  const small = run(['--port', '0', '--workers', '2', '--pool-size', '8', '--cluster', seed])
  const [code] = await once(small.child, 'exit')
  assert.equal(code, 2)
  assert.match(small.stderr(), /^respool: pool-size: this worker's share, 4, is too small for a cluster of 3 masters; .* in each of the 2 workers: --pool-size 10 at least, or fewer --workers$/m)
  await waitFor(() => markedProcesses().length === 0, `no process left: ${markedProcesses().join(',')}`, 5000)
  // A pool that holds masters + 2 in each worker serves the cluster from both workers.
  const enough = run(['--port', '0', '--workers', '2', '--pool-size', '10', '--cluster', seed])
  const port = await listeningPort(enough)
  const { clients } = await clientsOnBoth(port, 2)
  for (const [i, c] of clients.entries()) assert.equal(await replies(c, [cmd('SET', `cl:${i}`, 'v'), cmd('GET', `cl:${i}`)]), '+OK\r\n$1\r\nv\r\n')
})

test('--workers from a config file: a reload that changes the number of workers keeps the running workers within --pool-size', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const configFile = tempConfigFile()
  writeFileSync(configFile, JSON.stringify({ workers: 2, 'pool-size': 8 }))
  const r = run(['--port', '0', '--config', configFile, '--upstream', behind.url, '--metrics-port', String(metricsPort)])
  await listeningPort(r)
  assert.equal(metricSum(await scrape(metricsPort), 'respool_pool_max_connections'), 8)
  // The number of workers takes a restart; the two that run still split the total between them.
  writeFileSync(configFile, JSON.stringify({ workers: 1, 'pool-size': 8 }))
  r.child.kill('SIGHUP')
  const reloads = (): Array<Record<string, unknown>> => logLines(r).filter((l) => l.msg === 'configuration reloaded' || l.msg === 'reload failed; configuration unchanged')
  await waitFor(() => reloads().length === 2, `both workers reloaded: ${r.stdout()}`, 5000)
  assert.equal(metricSum(await scrape(metricsPort), 'respool_pool_max_connections'), 8, 'the shares still add up to --pool-size')
  assert.deepEqual(reloads().map((l) => l.msg), ['configuration reloaded', 'configuration reloaded'])
  for (const l of reloads()) assert.deepEqual(l.needsRestart, ['workers'])
})

test('--workers 2: a --shutdown-grace raised by a reload is honoured on SIGTERM, not cut short by the primary', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const configFile = tempConfigFile()
  writeFileSync(configFile, JSON.stringify({ 'shutdown-grace': 0 }))
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--config', configFile, '--upstream', behind.url, '--metrics-port', String(metricsPort)])
  const port = await listeningPort(r)
  writeFileSync(configFile, JSON.stringify({ 'shutdown-grace': 15000 }))
  r.child.kill('SIGHUP')
  await waitFor(() => logLines(r).filter((l) => l.msg === 'configuration reloaded').length === 2, `both workers reloaded: ${r.stdout()}`, 5000)
  const { clients } = await clientsOnBoth(port, 2)
  // Longer than the grace at start plus the primary's margin (5 s), shorter than the new grace.
  for (const c of clients) c.write(cmd('BLPOP', 'grace:q', '7'))
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_parked_commands') === clients.length, 'every BLPOP parked', 5000)
  const exited = once(r.child, 'exit')
  r.child.kill('SIGTERM')
  for (const c of clients) assert.equal(await c.readUntilClose(12000), '*-1\r\n')
  const [code] = await exited
  assert.equal(code, 0)
  await waitFor(() => markedProcesses().length === 0, 'no worker left running', 5000)
})

test('--workers 2: the primary takes its log level from a reload too, by SIGHUP or by RESPOOL RELOAD on a worker', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const configFile = tempConfigFile()
  writeFileSync(configFile, JSON.stringify({ 'log-level': 'info', 'pool-size': 6 }))
  const r = run(['--port', '0', '--workers', '2', '--config', configFile, '--upstream', behind.url, '--metrics-port', String(metricsPort), '--admin-password', 'adm'])
  const port = await listeningPort(r)
  const primaryLines = (msg: string): number => logLines(r).filter((l) => l.msg === msg && l.worker === undefined).length
  // SIGHUP to warn: the primary sets its level before it tells the workers, so once they have
  // taken the new pool size its own info line about the reload has been skipped.
  writeFileSync(configFile, JSON.stringify({ 'log-level': 'warn', 'pool-size': 8 }))
  r.child.kill('SIGHUP')
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_pool_max_connections') === 8, 'pool size 8 in all after SIGHUP', 5000)
  assert.equal(primaryLines('reloading every worker'), 0, `no info line from the primary at warn: ${r.stdout()}`)
  // Back to info through RESPOOL RELOAD on one worker: the primary follows.
  writeFileSync(configFile, JSON.stringify({ 'log-level': 'info', 'pool-size': 8 }))
  const c = await RawClient.connect(port)
  after(() => { c.close() })
  assert.equal(await replies(c, [cmd('RESPOOL', 'AUTH', 'adm'), cmd('RESPOOL', 'RELOAD')]), '+OK\r\n+OK\r\n')
  await waitFor(() => primaryLines('primary: log level reloaded') === 1, `the primary at info again: ${r.stdout()}`, 5000)
  const exited = once(r.child, 'exit')
  r.child.kill('SIGTERM')
  const [code] = await exited
  assert.equal(code, 0)
  assert.equal(primaryLines('draining every worker: no new clients; finishing in-flight commands'), 1, r.stdout())
})

test('--workers 2: a worker that keeps dying soon after start is replaced with a growing backoff', { timeout: 60000 }, async () => {
  const behind = await redis()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url])
  const port = await listeningPort(r)
  const deaths = (): Array<Record<string, unknown>> => logLines(r).filter((l) => l.worker === 1 && /worker died/.test(String(l.msg)))
  const replacements = (): Array<Record<string, unknown>> => logLines(r).filter((l) => l.worker === 1 && l.msg === 'replacement worker listening')
  for (let kill = 1; kill <= 4; kill++) {
    const victim = workerPids(r).get(1) as number
    process.kill(victim, 'SIGKILL')
    await waitFor(() => replacements().length === kill && workerPids(r).get(1) !== victim, `replacement ${kill}: ${r.stdout()}`, 15000)
  }
  // The first death after a stable life restarts at once; each quick death after it doubles the wait.
  assert.deepEqual(deaths().map((l) => l.restartInMs), [0, 100, 200, 400])
  for (const [i, death] of deaths().entries()) {
    const waited = (replacements()[i].time as number) - (death.time as number)
    assert.ok(waited >= (death.restartInMs as number), `replacement ${i + 1} came ${waited} ms after the death, before its ${String(death.restartInMs)} ms backoff`)
  }
  // The other worker served throughout, and both serve now.
  const { clients } = await clientsOnBoth(port, 2)
  for (const c of clients) assert.equal(await replies(c, [cmd('PING')]), '+PONG\r\n')
})

test('--workers 2: SIGTERM to one worker recycles it: its clients are drained, a replacement takes its place, the other worker is untouched', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--metrics-port', String(metricsPort)])
  const port = await listeningPort(r)
  const { clients, ids } = await clientsOnBoth(port, 2)
  const onFirst = clients[ids.findIndex((id) => id % 2 === 1)]
  const onSecond = clients[ids.findIndex((id) => id % 2 === 0)]
  // A command in flight on the recycled worker is answered before its connection closes.
  onSecond.write(cmd('BLPOP', 'recycle:q', '1'))
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_parked_commands') === 1, 'the BLPOP parked', 5000)
  const victim = workerPids(r).get(1) as number
  process.kill(victim, 'SIGTERM')
  assert.equal(await onSecond.readUntilClose(5000), '*-1\r\n')
  await waitFor(() => logLines(r).some((l) => l.worker === 1 && l.msg === 'replacement worker listening'), `the replacement: ${r.stdout()}`, 15000)
  assert.notEqual(workerPids(r).get(1), victim)
  assert.equal(await replies(onFirst, [cmd('PING')]), '+PONG\r\n', 'the other worker\'s client kept its connection')
  const text = await scrape(metricsPort)
  assert.equal(metricSum(text, 'respool_worker_restarts_total'), 0, 'a recycle is not a death')
  assert.equal(metricSum(text, 'respool_workers'), 2)
  // Ready once the replacement has its upstream connections too (it listens first).
  await waitFor(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200, 'ready again', 5000)
})

test('--workers 2: Ctrl-C (SIGINT to the whole process group) drains every worker, replaces none, and the primary exits 0', { timeout: 60000 }, async () => {
  const behind = await redis()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url], true)
  const port = await listeningPort(r)
  const { clients } = await clientsOnBoth(port, 2)
  for (const c of clients) c.write(cmd('BLPOP', 'ctrlc:q', '1'))
  await waitFor(() => markedProcesses().length === 3, 'primary and two workers', 5000)
  const exited = once(r.child, 'exit')
  process.kill(-(r.child.pid as number), 'SIGINT')
  for (const c of clients) assert.equal(await c.readUntilClose(5000), '*-1\r\n')
  const [code] = await exited
  assert.equal(code, 0)
  assert.ok(!logLines(r).some((l) => /starting a replacement|replacement worker listening/.test(String(l.msg))), `no worker replaced: ${r.stdout()}`)
  await waitFor(() => markedProcesses().length === 0, 'no process left', 5000)
})

test('--workers 2: a replacement that refuses an edited configuration is retried while the other worker serves; a reload of the fixed file brings it back at once', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const configFile = tempConfigFile()
  writeFileSync(configFile, JSON.stringify({ 'pool-size': 6 }))
  const r = run(['--port', '0', '--workers', '2', '--config', configFile, '--upstream', behind.url, '--metrics-port', String(metricsPort)])
  const port = await listeningPort(r)
  const { clients, ids } = await clientsOnBoth(port, 2)
  const onFirst = clients[ids.findIndex((id) => id % 2 === 1)]
  // Too small to split between two workers: a worker starting now refuses it.
  writeFileSync(configFile, JSON.stringify({ 'pool-size': 3 }))
  process.kill(workerPids(r).get(1) as number, 'SIGKILL')
  const refusals = (): Array<Record<string, unknown>> => logLines(r).filter((l) => l.worker === 1 && /refused the configuration/.test(String(l.msg)))
  // Tried again and again, each wait twice the last: until the next try is 6.4 s away.
  await waitFor(() => refusals().some((l) => (l.restartInMs as number) >= 6400), `the replacement refused, and was tried again: ${r.stdout()} ${r.stderr()}`, 20000)
  const fixedAt = Date.now()
  assert.match(r.stderr(), /pool-size: .*too small/)
  assert.equal(r.child.exitCode, null, 'respool still runs')
  assert.equal(await replies(onFirst, [cmd('SET', 'refused:k', 'v'), cmd('GET', 'refused:k')]), '+OK\r\n$1\r\nv\r\n', 'the other worker serves on')
  const notReady = await fetch(`http://127.0.0.1:${metricsPort}/readyz`)
  assert.equal(notReady.status, 503)
  assert.match(await notReady.text(), /1 of 2 workers listening/)
  // Fixed, and reloaded: the replacement starts without waiting out its backoff.
  writeFileSync(configFile, JSON.stringify({ 'pool-size': 6 }))
  r.child.kill('SIGHUP')
  await waitFor(() => logLines(r).some((l) => l.worker === 1 && l.msg === 'replacement worker listening'), `the replacement after the fix: ${r.stdout()}`, 4000)
  assert.ok(Date.now() - fixedAt < 6000, 'not after the backoff')
  // Ready once the replacement has its upstream connections too (it listens first).
  await waitFor(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200, 'ready again', 5000)
  const text = await scrape(metricsPort)
  assert.equal(metricSum(text, 'respool_worker_restarts_total'), 1, 'one death; the refusals are not deaths')
  assert.equal(metricSum(text, 'respool_pool_max_connections'), 6)
  const { clients: fresh } = await clientsOnBoth(port, 2)
  for (const c of fresh) assert.equal(await replies(c, [cmd('PING')]), '+PONG\r\n')
})

test('--workers 2: a worker started to replace one that died joins a RESPOOL PAUSE in force, and RESUME releases it', { timeout: 60000 }, async () => {
  const behind = await redis()
  const metricsPort = await freePort()
  const r = run(['--port', '0', '--workers', '2', '--pool-size', '6', '--upstream', behind.url, '--metrics-port', String(metricsPort), '--admin-password', 'adm'])
  const port = await listeningPort(r)
  const { clients, ids } = await clientsOnBoth(port, 2)
  const admin = clients[ids.findIndex((id) => id % 2 === 1)] // on worker 0
  assert.equal(await replies(admin, [cmd('RESPOOL', 'AUTH', 'adm'), cmd('RESPOOL', 'PAUSE')]), '+OK\r\n+OK\r\n')
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_paused') === 2, 'both workers paused', 5000)
  process.kill(workerPids(r).get(1) as number, 'SIGKILL')
  await waitFor(() => logLines(r).some((l) => l.worker === 1 && l.msg === 'replacement worker listening'), `the replacement: ${r.stdout()}`, 15000)
  await waitFor(async () => metricSum(await scrape(metricsPort), 'respool_paused') === 2, 'the replacement paused too', 5000)
  // A command on the replacement is held until RESUME (RESPOOL CLIENTS there shows it pending).
  // CLIENT ID waits out the pause: a client finds its worker and id in RESPOOL CLIENTS, by its own port.
  const onNew: Array<{ c: RawClient, id: number }> = []
  for (let i = 0; i < 40 && onNew.length < 2; i++) {
    const c = await RawClient.connect(port)
    after(() => { c.close() })
    const listing = await replies(c, [cmd('RESPOOL', 'AUTH', 'adm'), cmd('RESPOOL', 'CLIENTS')])
    const id = Number(new RegExp(`id=(\\d+) addr=127\\.0\\.0\\.1:${c.socket.localPort} `).exec(listing)?.[1])
    assert.ok(id > 0, listing)
    if (id % 2 === 0) onNew.push({ c, id })
  }
  assert.equal(onNew.length, 2, 'two clients on the replacement')
  const [{ c: held, id: heldId }, { c: watcher }] = onNew
  held.write(cmd('SET', 'paused:new', 'v'))
  await waitFor(async () => new RegExp(`id=${heldId} .* pending=1 `).test(await replies(watcher, [cmd('RESPOOL', 'CLIENTS')])), 'the SET held on the replacement', 5000)
  assert.equal(held.buffered.length, 0, 'the command is held')
  assert.equal(await replies(admin, [cmd('RESPOOL', 'RESUME')]), '+OK\r\n')
  assert.equal(await held.readExactly('+OK\r\n'), '+OK\r\n')
  assert.equal(metricSum(await scrape(metricsPort), 'respool_paused'), 0)
})
