import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn, splitFrames } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import {
  Rand, clientSeed, generateProgram, runProgram, firstDifference, normalizeFrame,
  type Program, type RunResult
} from '../helpers/differential.js'

/**
 * Differential test: many clients run random programs (transactions whole, typed and pipelined
 * across EXEC, WATCH, SELECT, HELLO, CLIENT REPLY, RESET, blocking commands, pub/sub, plain
 * commands), cut into writes at random places, all at once through one respool with a small
 * pool. Each program is also run alone against Redis directly; its whole reply stream through
 * respool must be the same, byte for byte (only the id inside HELLO's reply is blanked). Then
 * the keys each client wrote must be the same on both servers, and respool's upstream
 * connections must be clean: not in MULTI, not watching, in the database respool thinks.
 *
 * RESPOOL_DIFF_SEED=<n>[,<n>…] runs those seeds only (each failure names its seed).
 */

const POOL_SIZE = 4
const MAX_PINS = POOL_SIZE - 1
const DATABASES = 16
const CHECKER = 'differential-check'
/** Differing programs run again alone, to tell their own differences from other clients'. */
const ALONE_RERUNS = 3

function seeds (): number[] {
  const env = process.env.RESPOOL_DIFF_SEED
  if (env !== undefined && env.trim() !== '') {
    return env.split(',').map((s) => {
      const n = Number(s.trim())
      if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32) throw new Error(`RESPOOL_DIFF_SEED: not a seed: ${s}`)
      return n
    })
  }
  // Fixed seeds, so every run covers the same programs, and one new seed per run.
  return [1, 2, 3, Math.floor(Math.random() * 2 ** 32)]
}

for (const seed of seeds()) {
  test(`every client's replies through respool equal direct Redis's, and the pool ends clean (seed ${seed})`, { timeout: 60000 }, async (t) => {
    t.diagnostic(`seed ${seed}; reproduce with RESPOOL_DIFF_SEED=${seed}`)
    const problems = await differential(t, seed)
    if (problems.length > 0) {
      for (const p of problems) t.diagnostic(p)
      assert.fail(`seed ${seed} (reproduce with RESPOOL_DIFF_SEED=${seed}): ${problems.length} problem(s), the first ${Math.min(3, problems.length)}:\n${problems.slice(0, 3).join('\n')}`)
    }
  })
}

async function differential (t: TestContext, seed: number): Promise<string[]> {
  const direct = await startRedis()
  t.after(async () => { await direct.stop() })
  const upstream = await startRedis()
  t.after(async () => { await upstream.stop() })
  const proxy = await startProxy({ upstream: upstream.url, poolSize: POOL_SIZE, acquireTimeoutMs: 10000 })
  t.after(async () => { await proxy.destroy() })

  const rnd = Rand.seeded(seed)
  const programs: Program[] = []
  for (let i = 0, n = 24 + rnd.int(13); i < n; i++) {
    programs.push(generateProgram(Rand.seeded(clientSeed(seed, i)), i, { disconnect: rnd.chance(0.2) }))
  }
  const compared = programs.filter((p) => p.disconnectAfter === null)
  let phaseStart = performance.now()
  const phase = (name: string): void => {
    const now = performance.now()
    t.diagnostic(`${name}: ${Math.round(now - phaseStart)} ms`)
    phaseStart = now
  }
  t.diagnostic(`${programs.length} clients (${programs.length - compared.length} disconnect midway), ${programs.reduce((n, p) => n + p.commands.length, 0)} commands`)

  // Each program alone (they touch disjoint keys, so all at once) against Redis directly.
  const directRuns = new Map<number, RunResult>()
  await Promise.all(compared.map(async (p) => {
    const run = await runProgram(direct.port, p, { checkModel: true })
    if (run.frames[run.frames.length - 1] !== '+PONG\r\n') throw new Error(`test: client ${p.client}'s direct stream does not end with +PONG`)
    directRuns.set(p.client, run)
  }))
  phase('direct runs')

  // All of them at once through respool, with the clients that disconnect midway.
  const proxiedRuns = new Map<number, RunResult>()
  await Promise.all(programs.map(async (p) => {
    const expect = directRuns.get(p.client)?.frames.map(normalizeFrame)
    // A client that disconnects midway has nothing to compare: it waits less for its replies.
    proxiedRuns.set(p.client, await runProgram(proxy.address.port, p, { expect, waitMs: expect === undefined ? 300 : 2000 }))
  }))
  phase('runs through respool')

  const problems: string[] = []
  const clean = new Set<number>()
  const differing: Array<{ program: Program, at: number }> = []
  // Earliest first: a client's difference can be the cause of later ones in other clients.
  const byTime = [...compared].sort((a, b) => (proxiedRuns.get(a.client)?.differedAt ?? Infinity) - (proxiedRuns.get(b.client)?.differedAt ?? Infinity))
  for (const p of byTime) {
    const diff = firstDifference(p, directRuns.get(p.client) as RunResult, proxiedRuns.get(p.client) as RunResult)
    if (diff === null) clean.add(p.client)
    else differing.push({ program: p, at: problems.push(diff) - 1 })
  }

  try {
    await waitFor(() => proxy.snapshot().clients === 0 && proxy.snapshot().pins === 0, 'respool to let go of every client and pin', 5000)
  } catch {
    problems.push(`respool still holds ${proxy.snapshot().clients} client(s) and ${proxy.snapshot().pins} pin(s) after every client left`)
  }

  // What each client wrote, database by database, must be the same on both servers.
  const want = await keyspace(direct.port)
  const got = await keyspace(upstream.port)
  for (const client of clean) {
    const a = want.get(client) ?? []
    const b = got.get(client) ?? []
    const diff = firstListDifference(a, b)
    if (diff !== null) problems.push(`client ${client}: keys differ after the run: direct ${diff.want}, respool ${diff.got}`)
  }

  problems.push(...await upstreamStates(upstream.port, 'after the run'))
  // A WATCH left on a pooled connection shows once its keys change (flag d: EXEC would fail).
  await touchKeys(upstream.port, programs.flatMap((p) => p.keys))
  problems.push(...await upstreamStates(upstream.port, 'after every key was touched'))
  phase('key and connection checks')
  problems.push(...await transactionProbes(proxy.address.port, upstream.port))
  problems.push(...await databaseProbes(proxy.address.port, upstream.port, Rand.seeded(seed ^ 0xdb)))
  phase('probes')
  // Whether a difference needs the other clients: the first few programs that differed, alone.
  for (const { program, at } of differing.slice(0, ALONE_RERUNS)) {
    problems[at] += `\n  ${await aloneThroughRespool(t, program, problems[at])}`
  }
  if (differing.length > 0) phase('reruns alone')
  return problems
}

let aloneServers: { direct: RedisServer, upstream: RedisServer } | null = null

/** Runs one program alone, against fresh Redis servers and a fresh respool; says whether it differs there too. */
async function aloneThroughRespool (t: TestContext, program: Program, first: string): Promise<string> {
  if (aloneServers === null) {
    aloneServers = { direct: await startRedis(), upstream: await startRedis() }
    const servers = aloneServers
    t.after(async () => {
      aloneServers = null
      await servers.direct.stop()
      await servers.upstream.stop()
    })
  }
  const { direct, upstream } = aloneServers
  for (const server of [direct, upstream]) await commandOn(server.port, 'FLUSHALL')
  const proxy = await startProxy({ upstream: upstream.url, poolSize: POOL_SIZE, acquireTimeoutMs: 10000 })
  try {
    const want = await runProgram(direct.port, program)
    const got = await runProgram(proxy.address.port, program, { expect: want.frames.map(normalizeFrame), waitMs: 2000 })
    const diff = firstDifference(program, want, got)
    if (diff === null) return 'alone through a fresh respool its replies are right: this difference needs the other clients (or their timing)'
    if (diff.split('\n', 3).join('\n') === first.split('\n', 3).join('\n')) return 'alone through a fresh respool: the same difference'
    return `alone through a fresh respool: another difference, ${diff.split('\n')[0].replace(/^client \d+: /, '')}`
  } finally {
    await proxy.destroy()
  }
}

function firstListDifference (want: string[], got: string[]): { want: string, got: string } | null {
  for (let i = 0; i < Math.max(want.length, got.length); i++) {
    if (want[i] !== got[i]) {
      return { want: want[i] !== undefined ? JSON.stringify(want[i]) : '(no more keys)', got: got[i] !== undefined ? JSON.stringify(got[i]) : '(no more keys)' }
    }
  }
  return null
}

/** Every key of every client on a server: client index → sorted "db key type value" lines. */
async function keyspace (port: number): Promise<Map<number, string[]>> {
  const redis = checker(port)
  await redis.connect()
  const out = new Map<number, string[]>()
  try {
    for (let db = 0; db < DATABASES; db++) {
      await redis.select(db)
      const keys = (await redis.keys('c*')).sort()
      for (const key of keys) {
        const type = await redis.type(key)
        let value: unknown
        if (type === 'string') value = await redis.get(key)
        else if (type === 'list') value = await redis.lrange(key, 0, -1)
        else if (type === 'hash') value = await redis.hgetall(key)
        else if (type === 'set') value = (await redis.smembers(key)).sort()
        else if (type === 'zset') value = await redis.zrange(key, '0', '-1', 'WITHSCORES')
        else value = '?'
        const client = Number(/^c(\d+):/.exec(key)?.[1] ?? -1)
        const lines = out.get(client) ?? []
        lines.push(`db${db} ${key} ${type} ${JSON.stringify(value)}`)
        out.set(client, lines)
      }
    }
  } finally {
    redis.disconnect()
  }
  return out
}

/** A direct connection for checks, named so that it is not taken for one of respool's. */
function checker (port: number): Redis {
  return new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, connectionName: CHECKER })
}

/**
 * CLIENT LIST lines of respool's upstream connections (every connection but the test's own
 * checks: one renamed by a client's CLIENT SETNAME must not hide), as field maps.
 */
async function upstreamConnections (port: number): Promise<Array<Map<string, string>>> {
  const redis = checker(port)
  await redis.connect()
  try {
    const list = await redis.client('LIST') as string
    return list.split('\n').filter((line) => line !== '' && !line.includes(` name=${CHECKER} `)).map((line) => {
      return new Map(line.trim().split(' ').map((field) => {
        const eq = field.indexOf('=')
        return [field.slice(0, eq), field.slice(eq + 1)] as [string, string]
      }))
    })
  } finally {
    redis.disconnect()
  }
}

/** No upstream connection may be in MULTI, subscribed, or hold a watched key that changed. */
async function upstreamStates (port: number, when: string): Promise<string[]> {
  const problems: string[] = []
  const conns = await upstreamConnections(port)
  if (conns.length > POOL_SIZE) problems.push(`${when}: respool holds ${conns.length} upstream connections, more than the pool size ${POOL_SIZE}`)
  for (const c of conns) {
    if (c.get('name') !== 'respool' || c.get('multi') !== '-1' || c.get('flags') !== 'N' || c.get('sub') !== '0' || c.get('psub') !== '0') {
      const fields = ['name', 'flags', 'multi', 'sub', 'psub', 'db', 'resp', 'cmd'].map((f) => `${f}=${c.get(f) ?? '?'}`).join(' ')
      problems.push(`${when}: upstream connection id=${c.get('id') ?? '?'} is not clean: ${fields} (want name=respool flags=N multi=-1 sub=0 psub=0)`)
    }
  }
  return problems
}

/** Writes every key the programs could use, in every database (directly, not through respool). */
async function touchKeys (port: number, keys: string[]): Promise<void> {
  const redis = checker(port)
  await redis.connect()
  try {
    for (let db = 0; db < DATABASES; db++) {
      const pipeline = redis.pipeline().select(db)
      for (const key of keys) pipeline.set(key, 'touched')
      await pipeline.exec()
    }
  } finally {
    redis.disconnect()
  }
}

async function connectAll (port: number, n: number): Promise<RawClient[]> {
  return await Promise.all(Array.from({ length: n }, async () => await RawClient.connect(port)))
}

/**
 * Reads as many reply frames as `want` holds; their text, or what arrived before the time ran
 * out. A FrameReader per client keeps frames that arrive early for the next read.
 */
const readers = new WeakMap<RawClient, FrameReader>()
async function readReply (client: RawClient, want: string): Promise<string> {
  let frames = readers.get(client)
  if (frames === undefined) readers.set(client, frames = new FrameReader(client))
  const n = splitFrames(Buffer.from(want, 'latin1')).frames.length
  let got = ''
  try {
    for (let i = 0; i < n; i++) got += await frames.next(2000)
    return got
  } catch {
    return `${got}(then nothing more within 2 s)`
  }
}

/**
 * Transactions on every pooled connection: as many typed transactions as there are pins hold
 * every pinnable connection at once, while whole transactions run on the shared lane left. A
 * connection left in MULTI answers MULTI with an error, one left watching a (touched) key
 * answers EXEC with null, one in another database puts the key there, one in RESP3 answers
 * GET of a missing key with `_`, one in CLIENT REPLY OFF does not answer. Repeated until every
 * upstream connection ran a probe's EXEC last.
 */
async function transactionProbes (port: number, redisPort: number): Promise<string[]> {
  const problems: string[] = []
  const written: Array<{ key: string, db: number }> = []
  const expectReply = async (client: RawClient, want: string, what: string): Promise<void> => {
    const got = await readReply(client, want)
    if (got !== want) problems.push(`probe (${what}, from a new client in database 0, RESP2): want ${JSON.stringify(want)}, respool answered ${JSON.stringify(got)}`)
  }
  let covered = false
  for (let round = 0; round < 5 && problems.length === 0 && !covered; round++) {
    const typed = await connectAll(port, MAX_PINS)
    const whole = await connectAll(port, 6)
    try {
      for (const c of typed) c.write(cmd('MULTI'))
      await Promise.all(typed.map(async (c) => { await expectReply(c, '+OK\r\n', 'typed MULTI') }))
      whole.forEach((c, j) => {
        const key = `probe:w:${round}:${j}`
        written.push({ key, db: 0 })
        c.write(Buffer.concat([cmd('MULTI'), cmd('SET', key, 'v'), cmd('GET', 'probe:missing'), cmd('EXEC')]))
      })
      await Promise.all(whole.map(async (c) => { await expectReply(c, '+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n$-1\r\n', 'whole MULTI SET GET EXEC') }))
      typed.forEach((c, j) => {
        const key = `probe:t:${round}:${j}`
        written.push({ key, db: 0 })
        c.write(Buffer.concat([cmd('SET', key, 'v'), cmd('GET', 'probe:missing')]))
      })
      await Promise.all(typed.map(async (c) => { await expectReply(c, '+QUEUED\r\n+QUEUED\r\n', 'typed SET GET') }))
      for (const c of typed) c.write(cmd('EXEC'))
      await Promise.all(typed.map(async (c) => { await expectReply(c, '*2\r\n+OK\r\n$-1\r\n', 'typed EXEC') }))
    } finally {
      for (const c of [...typed, ...whole]) c.close()
    }
    // A connection either ran a probe's EXEC last, or was given back after a RESET that Redis
    // answered and then handshaken again (respool does that to every pin that carried MULTI or
    // WATCH, and to a new connection): its last command is then the handshake's last, respool's
    // CLIENT ID, and nothing a client did survives on it.
    covered = (await upstreamConnections(redisPort)).every((c) => c.get('cmd') === 'exec' || c.get('cmd') === 'client|id')
  }
  if (problems.length === 0 && !covered) {
    const conns = await upstreamConnections(redisPort)
    problems.push(`probe: not every upstream connection ran a probe transaction (last commands: ${conns.map((c) => c.get('cmd')).join(', ')})`)
  }
  problems.push(...await misplacedKeys(redisPort, 'probe:[wt]:*', written))
  return problems
}

/** Keys written through respool that are not (only) in their client's database. */
async function misplacedKeys (redisPort: number, pattern: string, written: Array<{ key: string, db: number }>): Promise<string[]> {
  const redis = checker(redisPort)
  await redis.connect()
  const where = new Map<string, number[]>()
  try {
    for (let db = 0; db < DATABASES; db++) {
      await redis.select(db)
      for (const key of await redis.keys(pattern)) where.set(key, [...(where.get(key) ?? []), db])
    }
  } finally {
    redis.disconnect()
  }
  const misplaced = written.filter(({ key, db }) => {
    const dbs = where.get(key) ?? []
    return dbs.length !== 1 || dbs[0] !== db
  })
  if (misplaced.length === 0) return []
  const examples = misplaced.slice(0, 3).map(({ key, db }) => `${key} (client in database ${db}) is in database(s) [${(where.get(key) ?? []).join(', ')}]`)
  return [`probe: ${misplaced.length} of ${written.length} keys written through respool are not in their client's database, e.g. ${examples.join('; ')}`]
}

/**
 * Databases and protocols of the shared lanes: clients in every database (some in RESP3) write
 * and read a key each, each right behind another client's SELECT that Redis refuses but that
 * names the same database (`SELECT 0n`), all in the same moment; every key must be in its
 * client's database, and every reply in its client's protocol.
 */
async function databaseProbes (port: number, redisPort: number, rnd: Rand): Promise<string[]> {
  const problems: string[] = []
  const written: Array<{ key: string, db: number }> = []
  const refused = '-ERR value is not an integer or out of range\r\n+PONG\r\n'
  for (let round = 0; round < 3 && problems.length === 0; round++) {
    const probes = await connectAll(port, DATABASES * 2)
    const chaos = await connectAll(port, probes.length)
    try {
      const resp3 = probes.map(() => rnd.chance(0.3))
      // Clients of database 0 send no SELECT: they rely on the lane being where respool thinks.
      probes.forEach((c, j) => {
        const db = j % DATABASES
        c.write(Buffer.concat([...(resp3[j] ? [cmd('HELLO', '3')] : []), ...(db !== 0 ? [cmd('SELECT', String(db))] : [cmd('PING')])]))
      })
      await Promise.all(probes.map(async (c, j) => {
        if (resp3[j]) await readReply(c, '_\r\n') // HELLO's map, whatever it holds
        const want = j % DATABASES !== 0 ? '+OK\r\n' : '+PONG\r\n'
        const got = await readReply(c, want)
        if (got !== want) problems.push(`probe: ${j % DATABASES !== 0 ? `SELECT ${j % DATABASES}` : 'PING'} answered ${JSON.stringify(got)}`)
      }))
      // Everything in the same moment, each write right behind a refused SELECT of its database.
      probes.forEach((c, j) => {
        const db = j % DATABASES
        chaos[j].write(Buffer.concat([cmd('SELECT', `0${db}`), cmd('PING')]))
        const key = `probe:db:${round}:${j}`
        written.push({ key, db })
        c.write(Buffer.concat([cmd('SET', key, String(db)), cmd('GET', key), cmd('GET', 'probe:missing')]))
      })
      await Promise.all(chaos.map(async (c, j) => {
        const got = await readReply(c, refused)
        if (got !== refused) problems.push(`probe (SELECT 0${j % DATABASES}): want ${JSON.stringify(refused)}, respool answered ${JSON.stringify(got)}`)
      }))
      await Promise.all(probes.map(async (c, j) => {
        const value = String(j % DATABASES)
        const want = `+OK\r\n$${value.length}\r\n${value}\r\n${resp3[j] ? '_' : '$-1'}\r\n`
        const got = await readReply(c, want)
        if (got !== want) problems.push(`probe (SELECT ${value}, ${resp3[j] ? 'RESP3' : 'RESP2'}): SET/GET/GET want ${JSON.stringify(want)}, respool answered ${JSON.stringify(got)}`)
      }))
    } finally {
      for (const c of [...probes, ...chaos]) c.close()
    }
  }
  problems.push(...await misplacedKeys(redisPort, 'probe:db:*', written))
  return problems
}
