import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy, holdPin } from '../helpers/proxy.js'
import { runScript, step, showFrames, type Step } from '../helpers/script.js'
import { startBystanders, type Bystanders } from '../helpers/bystanders.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { prng } from '../helpers/prng.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Cross-talk and state that must never leak: every script runs once on a direct connection to
 * one redis-server and once through respool to another, and the whole reply streams must be
 * equal, while bystanders pipeline on the same small pool and check every reply they get. After
 * each script, no upstream connection may be left inside MULTI.
 */

let direct: RedisServer
let upstream: RedisServer
let proxy: ProxyServer
let bystanders: Bystanders

before(async () => {
  direct = await startRedis()
  // The bound is enforced by Redis itself: the pool of 2, the bystanders' own admin checks
  // (one at a time) and nothing else.
  upstream = await startRedis(['--maxclients', '3'])
  proxy = await startProxy({ upstream: upstream.url, poolSize: 2 })
  bystanders = await startBystanders(proxy.address.port, 4, 'inv-by')
})

after(async () => {
  bystanders?.stop()
  await proxy?.destroy()
  await upstream?.stop()
  await direct?.stop()
})

/** Runs a script direct and through respool; the reply streams must be equal. */
async function same (name: string, steps: Step[], normalise: (frames: string[]) => string[] = (f) => f): Promise<string[]> {
  const want = normalise(await runScript(direct.port, steps))
  const got = normalise(await runScript(proxy.address.port, steps))
  assert.deepEqual(got, want, `${name}: direct ${showFrames(want)}, through respool ${showFrames(got)}`)
  await noConnectionInMulti(name)
  bystanders.check()
  return got
}

/** Every connection respool holds to Redis is outside MULTI once the pins are given back. */
async function noConnectionInMulti (name: string): Promise<void> {
  await waitFor(() => proxy.snapshot().pins === 0, `${name}: pins given back`)
  const admin = await RawClient.connect(upstream.port)
  try {
    admin.write(cmd('CLIENT', 'LIST'))
    const list = (await new FrameReader(admin).next()).split('\r\n')[1] ?? ''
    for (const line of list.split('\n').filter((l) => l !== '' && !l.includes(' cmd=client|list '))) {
      assert.match(line, / multi=-1 /, `${name}: an upstream connection is inside MULTI: ${line}`)
    }
  } finally {
    admin.close()
  }
}

const OFF = ['CLIENT', 'REPLY', 'OFF']

test('a MULTI pipelined behind the EXEC or DISCARD that ends a typed transaction opens a new one', async () => {
  await same('EXEC+MULTI', [step(1, ['MULTI']), step(2, ['EXEC'], ['MULTI']), step(2, ['SET', 'inv:a', '1'], ['EXEC'])])
  await same('DISCARD+MULTI', [step(1, ['MULTI']), step(2, ['DISCARD'], ['MULTI']), step(2, ['SET', 'inv:a', '2'], ['EXEC'])])
  await same('WATCH MULTI EXEC MULTI', [step(4, ['WATCH', 'inv:w'], ['MULTI'], ['EXEC'], ['MULTI']), step(2, ['SET', 'inv:w', '3'], ['EXEC'])])
  await same('behind a pinned BLPOP', [step(2, ['BLPOP', 'inv:q', '0.05'], ['MULTI']), step(2, ['SET', 'inv:a', '4'], ['EXEC'])])
  await same('EXEC, BLPOP, MULTI', [step(1, ['MULTI']), step(3, ['EXEC'], ['BLPOP', 'inv:q', '0.05'], ['MULTI']), step(2, ['INCR', 'inv:n'], ['EXEC'])])
  await same('transaction after transaction, all in one write', [step(9, ['MULTI'], ['INCR', 'inv:n'], ['EXEC'], ['MULTI'], ['INCR', 'inv:n'], ['EXEC'], ['WATCH', 'inv:n'], ['MULTI'], ['EXEC'])])
})

test('MULTI, EXEC, DISCARD, WATCH and UNWATCH with the wrong number of arguments are Redis\'s to refuse', async () => {
  await same('arity outside MULTI', [step(5, ['MULTI', 'x'], ['EXEC', 'x'], ['DISCARD', 'x'], ['WATCH'], ['UNWATCH', 'x'])])
  await same('EXEC x inside MULTI keeps it open', [step(1, ['MULTI']), step(3, ['EXEC', 'x'], ['SET', 'inv:a', '5'], ['EXEC'])])
  await same('whole transaction ending in EXEC x', [step(4, ['MULTI'], ['SET', 'inv:a', '6'], ['EXEC', 'x'], ['DISCARD'])])
  // A refused EXEC ends the transaction (EXECABORT) and every WATCH: what follows runs at once.
  await same('EXEC x ends MULTI', [step(1, ['MULTI']), step(6, ['EXEC', 'x'], ['SELECT', '5'], ['SET', 'inv:exec-x', 'five'], ['EXEC'], ['SELECT', '0'], ['GET', 'inv:exec-x']), step(2, ['SELECT', '5'], ['GET', 'inv:exec-x'])])
  await same('EXEC x ends WATCH', [step(3, ['WATCH', 'inv:w2'], ['EXEC', 'x'], ['SET', 'inv:w2', 'changed']), step(3, ['MULTI'], ['SET', 'inv:w2', 'mine'], ['EXEC'])])
})

test('AUTH and inline commands are read as Redis reads them', async () => {
  await same('AUTH with too many arguments', [step(2, ['AUTH', 'a', 'b', 'c'], ['AUTH'])])
  await same('\\v and \\f inside an inline word', [{ send: Buffer.from('SET inv:vt a\x0bb\x0cc\r\nGET inv:vt\r\n \x0b PING \x0c\r\n', 'latin1'), frames: 3 }])
})

test('SCRIPT DEBUG is refused: the Lua debugger would take over a shared connection', async () => {
  const frames = await runScript(proxy.address.port, [step(3, ['SCRIPT', 'DEBUG', 'YES'], ['SCRIPT', 'DEBUG', 'SYNC'], ['SCRIPT', 'DEBUG', 'NO'])])
  assert.match(frames[0], /^-ERR respool: SCRIPT DEBUG would turn a shared connection into a debugger session/)
  assert.match(frames[1], /^-ERR respool: SCRIPT DEBUG/)
  assert.equal(frames[2], '+OK\r\n')
  await same('EVAL after a refused SCRIPT DEBUG', [step(2, ['SCRIPT', 'DEBUG', 'NO'], ['EVAL', 'return 1', '0'])])
})

test('commands pipelined right after EXEC or DISCARD are outside the transaction', async () => {
  await same('EXEC; CLIENT SETNAME; CLIENT GETNAME; CLIENT REPLY ON; PING', [
    step(1, ['MULTI']),
    step(6, ['SET', 'inv:b', '1'], ['EXEC'], ['CLIENT', 'SETNAME', 'after-exec'], ['CLIENT', 'GETNAME'], ['CLIENT', 'REPLY', 'ON'], ['PING'])
  ])
  await same('DISCARD; AUTH; SUBSCRIBE', [
    step(1, ['MULTI']),
    step(3, ['DISCARD'], ['AUTH', 'default', 'anything'], ['SUBSCRIBE', 'inv:ch']),
    step(1, ['UNSUBSCRIBE'])
  ])
  await same('EXEC; CLIENT REPLY OFF; …; CLIENT REPLY ON', [
    step(1, ['MULTI']),
    step(3, ['EXEC'], OFF, ['SET', 'inv:c', '1'], ['CLIENT', 'REPLY', 'ON'], ['GET', 'inv:c'])
  ])
  // HELLO's reply carries the connection id, which differs: that one number is masked.
  const maskId = (frames: string[]): string[] => frames.map((f) => f.replace(/(\$2\r\nid\r\n:)\d+/, '$1<id>'))
  const frames = await same('EXEC; HELLO 3; HSET; HGETALL', [
    step(1, ['MULTI']),
    step(2, ['EXEC'], ['HELLO', '3']),
    step(2, ['HSET', 'inv:h', 'f', 'v'], ['HGETALL', 'inv:h'])
  ], maskId)
  assert.equal(frames.at(-1), '%1\r\n$1\r\nf\r\n$1\r\nv\r\n', 'the client speaks RESP3 after HELLO 3')
})

test('CLIENT REPLY corner cases are answered as Redis answers them', async () => {
  await same('OFF; RESET; PING', [step(2, OFF, ['RESET'], ['PING'])])
  await same('OFF; SKIP; PING; ON; PING', [step(2, OFF, ['CLIENT', 'REPLY', 'SKIP'], ['PING'], ['CLIENT', 'REPLY', 'ON'], ['PING'])])
  await same('SKIP; RESET; PING', [step(1, ['CLIENT', 'REPLY', 'SKIP'], ['RESET'], ['PING'])])
  await same('SKIP; ON; PING', [step(2, ['CLIENT', 'REPLY', 'SKIP'], ['CLIENT', 'REPLY', 'ON'], ['PING'])])
  await same('SKIP; SKIP; PING; PING', [step(1, ['CLIENT', 'REPLY', 'SKIP'], ['CLIENT', 'REPLY', 'SKIP'], ['PING'], ['PING'])])
  await same('bad arguments', [step(3, ['CLIENT', 'REPLY'], ['CLIENT', 'REPLY', 'maybe'], ['CLIENT', 'REPLY', 'ON', 'x'])])
  await same('OFF hides errors too', [step(1, OFF, ['NOSUCHCOMMAND'], ['CLIENT', 'REPLY', 'ON'])])
})

test('pub/sub confirmations and messages reach the client under CLIENT REPLY OFF and SKIP, as pushes do from Redis', async () => {
  const publish = (message: string) => async (port: number): Promise<void> => {
    const publisher = await RawClient.connect(port)
    publisher.write(cmd('PUBLISH', 'inv:pushes', message))
    await new FrameReader(publisher).next()
    publisher.close()
  }
  const published = (message: string): Step => ({ send: Buffer.alloc(0), frames: 1, before: publish(message) })
  await same('RESP2, OFF', [step(1, OFF, ['SUBSCRIBE', 'inv:pushes']), published('one'), step(1, ['UNSUBSCRIBE']), step(0, ['PING']), step(1, ['RESET'])])
  await same('RESP2, SKIP', [step(1, ['CLIENT', 'REPLY', 'SKIP'], ['SUBSCRIBE', 'inv:pushes']), published('two'), step(1, ['UNSUBSCRIBE'], ['SUBSCRIBE']), step(1, ['RESET'])])
  await same('RESP3, OFF', [step(1, ['HELLO', '3']), step(1, OFF, ['SUBSCRIBE', 'inv:pushes']), published('three'), step(1, ['UNSUBSCRIBE', 'inv:pushes']), step(1, ['RESET'])],
    (frames) => frames.map((f) => f.replace(/(\$2\r\nid\r\n:)\d+/, '$1<id>')))
})

test('SELECT is decided by Redis, also inside MULTI, and the client\'s next command runs where Redis says', async () => {
  await same('refused SELECTs', [step(11,
    ['SET', 'inv:s', 'zero'], ['SELECT', '01'], ['SELECT', '-1'], ['SELECT', '16'], ['SELECT', '1x'], ['SELECT', ''], ['SELECT', '+1'], ['SELECT'],
    ['GET', 'inv:s'], ['SELECT', '3'], ['GET', 'inv:s'])])
  await same('SELECT inside MULTI', [
    step(1, ['SELECT', '0']),
    step(1, ['MULTI']),
    step(6, ['SELECT', '01'], ['SELECT', '2'], ['SET', 'inv:t', 'two'], ['SELECT', '99'], ['EXEC'], ['GET', 'inv:t']),
    step(2, ['SELECT', '0'], ['GET', 'inv:t'])
  ])
  await same('SELECT inside a transaction that a WATCH aborts', [
    step(3, ['SELECT', '4'], ['WATCH', 'inv:u'], ['SET', 'inv:u', 'changed']),
    step(5, ['MULTI'], ['SELECT', '5'], ['EXEC'], ['SET', 'inv:where', 'four'], ['SELECT', '4']),
    step(1, ['GET', 'inv:where'])
  ])
})

test('a refused SELECT 01 never sends a neighbour\'s write to the wrong database', async () => {
  const up = await startRedis()
  const p = await startProxy({ upstream: up.url, poolSize: 2 })
  const release = await holdPin(p) // one shared lane: B, C and A all use it
  try {
    const b = await RawClient.connect(p.address.port)
    const bFrames = new FrameReader(b)
    b.write(cmd('SELECT', '1'))
    assert.equal(await bFrames.next(), '+OK\r\n')
    // Each write is seen by respool before the next is sent: C's script holds the lane, A's
    // SELECT waits behind it, and B's write is sent while A's SELECT is still unanswered.
    const seen = async (write: () => void): Promise<void> => {
      const count = p.snapshot().commands
      write()
      await waitFor(() => p.snapshot().commands > count, 'respool received the command')
    }
    const c = await RawClient.connect(p.address.port)
    await seen(() => { c.write(cmd('EVAL', 'local t = redis.call("TIME") local s = t[1] * 1000000 + t[2] repeat t = redis.call("TIME") until t[1] * 1000000 + t[2] - s > 300000 return 1', '0')) })
    const a = await RawClient.connect(p.address.port)
    await seen(() => { a.write(cmd('SELECT', '01')) })
    await seen(() => { b.write(cmd('SET', 'whose-db', 'b')) })
    assert.equal(await new FrameReader(a).next(), '-ERR value is not an integer or out of range\r\n')
    assert.equal(await bFrames.next(), '+OK\r\n')
    assert.equal(await new FrameReader(c).next(5000), ':1\r\n')
    const check = await RawClient.connect(up.port)
    const frames = new FrameReader(check)
    check.write(Buffer.concat([cmd('SELECT', '1'), cmd('GET', 'whose-db'), cmd('SELECT', '0'), cmd('EXISTS', 'whose-db')]))
    assert.deepEqual(await frames.take(4), ['+OK\r\n', '$1\r\nb\r\n', '+OK\r\n', ':0\r\n'])
    for (const client of [a, b, c, check]) client.close()
  } finally {
    release()
    await p.destroy()
    await up.stop()
  }
})

test('property: random valid and invalid state changes never move anybody\'s keys to another database', { timeout: 60000 }, async (t) => {
  const seed = Number(process.env.RESPOOL_STATE_SEED ?? 0x5e1ec7)
  t.diagnostic(`seed ${seed} (RESPOOL_STATE_SEED)`)
  const up = await startRedis()
  const p = await startProxy({ upstream: up.url, poolSize: 3 })
  const opened: RawClient[] = []
  try {
    const rnd = prng(seed)
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]
    const CHANGES: Array<{ args: string[], db?: number }> = [
      ...Array.from({ length: 16 }, (_, n) => ({ args: ['SELECT', String(n)], db: n })),
      { args: ['SELECT', '01'] }, { args: ['SELECT', '-1'] }, { args: ['SELECT', '16'] }, { args: ['SELECT', '00'] },
      { args: ['SELECT', '-0'] }, { args: ['SELECT', '1 '] }, { args: ['HELLO', '2'] }, { args: ['HELLO', '3'] },
      { args: ['HELLO', '4'] }, { args: ['HELLO', '03'] }, { args: ['HELLO', '3', 'AUTH', 'nobody', 'wrong'] },
      { args: ['HELLO', '2', 'SETNAME', 'bad name'] }, { args: ['CLIENT', 'SETNAME', 'x y'] }
    ]
    const CLIENTS = 12
    const WRITES = 120
    const expected = new Map<string, number>() // key -> the database it must be in
    await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => {
      const client = await RawClient.connect(p.address.port)
      opened.push(client)
      const frames = new FrameReader(client)
      let db = 0
      let pending = 0
      let batch: Buffer[] = []
      for (let w = 0; w < WRITES; w++) {
        if (rnd() < 0.35) {
          const change = pick(CHANGES)
          batch.push(cmd(...change.args))
          if (change.db !== undefined) db = change.db
        } else {
          const key = `prop:${i}:${w}`
          batch.push(cmd('SET', key, String(db)))
          expected.set(key, db)
        }
        pending++
        // Random write boundaries; sometimes wait for the replies, sometimes keep pipelining.
        if (rnd() < 0.3) {
          client.write(Buffer.concat(batch))
          batch = []
          if (rnd() < 0.5) {
            await frames.take(pending, 10000)
            pending = 0
          }
        }
      }
      client.write(Buffer.concat(batch))
      await frames.take(pending, 10000)
    }))
    // Every key is in the database its client had selected, and nowhere else.
    const check = await RawClient.connect(up.port)
    opened.push(check)
    const frames = new FrameReader(check)
    let found = 0
    for (let n = 0; n < 16; n++) {
      check.write(Buffer.concat([cmd('SELECT', String(n)), cmd('KEYS', 'prop:*')]))
      const [, keys] = await frames.take(2)
      const names = keys.split('\r\n').filter((line, k) => k > 0 && k % 2 === 0 && line !== '')
      for (const key of names) {
        assert.equal(expected.get(key), n, `seed ${seed}: ${key} is in database ${n}, its client had selected ${String(expected.get(key))}`)
        found++
      }
    }
    assert.equal(found, expected.size, `seed ${seed}: every key written exists`)
    t.diagnostic(`${found} keys, each in its own client's database`)
  } finally {
    for (const c of opened) c.close()
    await p.destroy()
    await up.stop()
  }
})
