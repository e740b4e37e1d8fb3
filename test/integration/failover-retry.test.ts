import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, freePort, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
import { startCheckedBystanders } from '../helpers/checked-bystanders.js'
import { waitFor } from '../helpers/wait.js'
import { UpstreamConnection } from '../../src/upstream/upstream-connection.js'
import { ReplySlot, type ReplySink } from '../../src/routing/reply-slot.js'
import type { ProxyServer } from '../../src/proxy-server.js'

const retried = async (proxy: ProxyServer): Promise<number> => Number(/commands_retried_total:(\d+)/.exec(await commandOn(proxy.address.port, 'RESPOOL', 'STATS'))?.[1])

/** A client's pipeline of n INCRs of its own counter and a GET of it: the replies are known exactly. */
function counterPipeline (key: string, from: number, n: number): { command: Buffer, reply: string } {
  const commands: Buffer[] = []
  let reply = ''
  for (let i = 1; i <= n; i++) {
    commands.push(cmd('INCR', key))
    reply += `:${from + i}\r\n`
  }
  commands.push(cmd('GET', key))
  reply += `$${String(from + n).length}\r\n${from + n}\r\n`
  return { command: Buffer.concat(commands), reply }
}

test('an upstream connection closing with commands still in respool gives them back to be sent again; those written fail', { timeout: 10000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const conn = await UpstreamConnection.connect({ id: 1, address: { host: '127.0.0.1', port: redis.port, db: 0, tls: false }, connectTimeoutMs: 2000, commandTimeoutMs: 2000 })
  const events: string[] = []
  const sink = (name: string): ReplySink => ({
    onReply: (_s, frame) => { events.push(`${name} reply ${frame.toString('latin1').trim()}`) },
    onReplyPart: () => {},
    onFailure: (_s, err) => { events.push(`${name} failed: ${err.message}`) },
    retryElsewhere: (_s, _c, refusal) => { events.push(`${name} back${refusal === null ? ' (never written)' : ''}`); return true }
  })
  conn.send(cmd('INCR', 'n'), new ReplySlot(sink('a'), null))
  // The turn ends: a's bytes are handed to the socket (its reply cannot be read yet).
  await new Promise((resolve) => setImmediate(resolve))
  conn.send(cmd('INCR', 'n'), new ReplySlot(sink('b'), null))
  conn.send(cmd('INCR', 'n'), new ReplySlot(sink('c'), null))
  conn.destroy()
  assert.deepEqual(events, ['a failed: upstream connection closed by respool', 'b back (never written)', 'c back (never written)'])
  // Redis ran a (it was written), and never saw b and c.
  const direct = new Redis({ port: redis.port, host: '127.0.0.1' })
  after(() => { direct.disconnect() })
  await waitFor(async () => await direct.get('n') === '1', 'a ran')
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(await direct.get('n'), '1')
})

test('a switch while pipelined commands are still in respool: they are sent again on the new connection, in each client\'s order, with no error', { timeout: 30000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4, reconnectMaxMs: 50 })
  after(async () => { await proxy.destroy() })
  const bystanders = await startCheckedBystanders(proxy.address.port, { count: 3, pipeline: 30 })
  after(async () => { await bystanders.stop() })
  // The fault: a command is handed to an idle upstream connection, and before the turn's bytes
  // leave respool, the topology hears that the node is no longer the master (as a
  // +switch-master or a -READONLY read in the same turn would tell it). Every connection closes;
  // nothing written is in flight, so every command on them is one Redis never saw.
  const send = UpstreamConnection.prototype.send
  let chances = 0
  let switches = 0
  let armed = false
  const open = new Set<UpstreamConnection>()
  const idleElsewhere = (conn: UpstreamConnection): boolean => [...open].every((c) => c === conn || !c.isReady || c.inflight === 0)
  UpstreamConnection.prototype.send = function (this: UpstreamConnection, frame: Buffer, slot: ReplySlot) {
    send.call(this, frame, slot)
    open.add(this)
    if (armed && slot.command !== null && this.inflight === 1 && idleElsewhere(this) && switches < 20 && ++chances % 2 === 0) {
      switches++
      queueMicrotask(() => { proxy.topology.report('readonly', proxy.topology.epoch, 'test: the switch arrives in the same turn') })
    }
  }
  after(() => { UpstreamConnection.prototype.send = send })

  const clients = await Promise.all(Array.from({ length: 4 }, async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of clients) c.close() })
  const readers = clients.map((c) => new FrameReader(c))
  const retriedBefore = await retried(proxy)
  armed = true
  const counts = new Array<number>(clients.length).fill(0)
  for (let round = 0; round < 30; round++) {
    await Promise.all(clients.map(async (c, who) => {
      const p = counterPipeline(`retry:${who}`, counts[who], 40)
      c.write(p.command)
      const got = (await readers[who].take(41, 10000)).join('')
      assert.equal(got, p.reply, `client ${who} round ${round}`)
      counts[who] += 40
    }))
  }
  armed = false
  await bystanders.moreRounds(1)
  assert.deepEqual(await bystanders.stop(), [])
  const resent = await retried(proxy) - retriedBefore
  t.diagnostic(`${switches} switches with commands still in respool; ${resent} commands sent again; 0 errors over ${clients.length} pipelining clients and 3 bystanders`)
  assert.ok(switches >= 5, `switches: ${switches}`)
  assert.ok(resent > 0, 'commands were sent again')
  assert.equal(proxy.topology.failovers, switches)
})

test('a fixed upstream demoted (FAILOVER) and promoted back: refused writes and the reads behind them are sent again, clients see no error', { timeout: 30000 }, async (t) => {
  // Without the diskless-sync delay (5 s by default), a replica is in sync within a second.
  const sync = ['--repl-diskless-sync-delay', '0']
  const a = await startRedis(sync)
  after(async () => { await a.stop() })
  const b = await startRedis(['--replicaof', '127.0.0.1', String(a.port), ...sync])
  after(async () => { await b.stop() })
  const directA = new Redis({ port: a.port, host: '127.0.0.1' })
  after(() => { directA.disconnect() })
  const directB = new Redis({ port: b.port, host: '127.0.0.1' })
  after(() => { directB.disconnect() })
  // FAILOVER needs the master's own view of its replica to be online (it lags the replica's).
  await waitFor(async () => /state=online/.test(await directA.info('replication')), 'a sees b online')
  const proxy = await startProxy({ upstream: a.url, poolSize: 4, acquireTimeoutMs: 8000, reconnectMaxMs: 50 })
  after(async () => { await proxy.destroy() })
  const bystanders = await startCheckedBystanders(proxy.address.port, { count: 4, pipeline: 40, pauseMs: 0 })
  after(async () => { await bystanders.stop() })
  await bystanders.moreRounds(3)
  const retriedBefore = await retried(proxy)

  // Redis's own coordinated switch: a pauses writes, b catches up and takes over, a turns into
  // its replica. Writes paused on a are then refused there (-READONLY).
  await directA.call('FAILOVER', 'TO', '127.0.0.1', String(b.port))
  await waitFor(async () => /^role:slave/m.test(await directA.info('replication')), 'a is a replica', 10000)
  await waitFor(() => proxy.topology.failovers === 1, 'respool saw that a is no longer the master')
  const refusedRounds = bystanders.rounds
  // respool is refused by ROLE for a while: its clients' commands wait.
  await new Promise((resolve) => setTimeout(resolve, 500))
  await waitFor(async () => /master_link_status:up/.test(await directA.info('replication')) && /state=online/.test(await directB.info('replication')), 'a replicates b, and b sees it online', 10000)
  await directB.call('FAILOVER', 'TO', '127.0.0.1', String(a.port))
  await waitFor(async () => /^role:master/m.test(await directA.info('replication')), 'a is the master again', 10000)
  await bystanders.moreRounds(3, 20000)
  assert.deepEqual(await bystanders.stop(), [])
  const resent = await retried(proxy) - retriedBefore
  t.diagnostic(`demoted and promoted back: ${resent} commands sent again, 0 errors over 4 pipelining bystanders (${refusedRounds} rounds before the switch)`)
  assert.ok(resent > 0, 'some commands were refused and sent again')
  assert.equal(proxy.topology.failovers, 1)
})

/**
 * A Redis with 30,000 keys saved, which loads them slowly when restarted: 50 µs a key (about
 * 1.5 s, longer on a busy machine), answering clients (-LOADING) every 1 KB loaded.
 */
async function slowLoadingRedis (): Promise<{ redis: RedisServer, direct: Redis, restartLoading: () => Promise<void> }> {
  const redis = await startRedis(['--key-load-delay', '50', '--loading-process-events-interval-bytes', '1024', '--dbfilename', 'dump.rdb'])
  after(async () => { await redis.stop() })
  const direct = new Redis({ port: redis.port, host: '127.0.0.1', retryStrategy: () => 50 })
  direct.on('error', () => {})
  after(() => { direct.disconnect() })
  for (let i = 0; i < 30; i++) {
    const args: string[] = []
    for (let j = 0; j < 1000; j++) args.push(`fill:${i}:${j}`, 'x')
    await direct.mset(...args)
  }
  await direct.set('known', 'value\r\n\x00')
  await direct.save()
  return {
    redis,
    direct,
    async restartLoading () {
      await redis.restart()
      const probe = await RawClient.connect(redis.port)
      probe.write(cmd('GET', 'known'))
      const reply = await new FrameReader(probe).next()
      probe.close()
      assert.match(reply, /^-LOADING /, 'the restarted Redis is loading')
    }
  }
}

test('-LOADING: a restarted upstream loading its dataset slowly; commands sent meanwhile succeed once it is loaded', { timeout: 60000 }, async (t) => {
  const { redis, direct, restartLoading } = await slowLoadingRedis()
  // The loading may take longer than the default --retry-budget (10 s) on a busy machine.
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4, reconnectMaxMs: 50, retryBudgetMs: 60000 })
  after(async () => { await proxy.destroy() })
  assert.equal(await commandOn(proxy.address.port, 'GET', 'known'), '$8\r\nvalue\r\n\x00\r\n')
  const retriedBefore = await retried(proxy)

  await restartLoading()
  const loadingFrom = performance.now()

  // Clients that send while Redis loads: pipelines with exact replies.
  const clients = await Promise.all(Array.from({ length: 3 }, async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of clients) c.close() })
  const wants = clients.map((c, who) => {
    const p = counterPipeline(`loading:${who}`, 0, 20)
    c.write(Buffer.concat([p.command, cmd('GET', 'known'), cmd('PING')]))
    return p.reply + '$8\r\nvalue\r\n\x00\r\n+PONG\r\n'
  })
  const replies = await Promise.all(clients.map(async (c, who) => {
    const got = (await new FrameReader(c).take(23, 15000)).join('')
    return { who, got, at: performance.now() }
  }))
  const loaded = await direct.info('persistence')
  assert.match(loaded, /^loading:0/m)
  for (const r of replies) assert.equal(r.got, wants[r.who], `client ${r.who}`)
  const bystanders = await startCheckedBystanders(proxy.address.port, { count: 2, pipeline: 24 })
  after(async () => { await bystanders.stop() })
  await bystanders.moreRounds(2, 15000)
  assert.deepEqual(await bystanders.stop(), [])
  const resent = await retried(proxy) - retriedBefore
  const waited = Math.round(Math.max(...replies.map((r) => r.at)) - loadingFrom)
  t.diagnostic(`loading: clients' replies complete ${waited} ms after Redis was seen loading; ${resent} commands sent again; no -LOADING reached a client`)
  assert.ok(resent > 0, 'commands were refused with -LOADING and sent again')
})

test('a command that ran on a demoted master behind a refused one: the refused one before it gets its refusal, those after it are sent again', { timeout: 30000 }, async () => {
  const sync = ['--repl-diskless-sync-delay', '0']
  const a = await startRedis(sync)
  after(async () => { await a.stop() })
  const b = await startRedis(['--replicaof', '127.0.0.1', String(a.port), ...sync])
  after(async () => { await b.stop() })
  const directA = new Redis({ port: a.port, host: '127.0.0.1' })
  after(() => { directA.disconnect() })
  const directB = new Redis({ port: b.port, host: '127.0.0.1' })
  after(() => { directB.disconnect() })
  // FAILOVER needs the master's own view of its replica to be online (it lags the replica's).
  await waitFor(async () => /state=online/.test(await directA.info('replication')), 'a sees b online')
  const proxy = await startProxy({ upstream: a.url, poolSize: 4, acquireTimeoutMs: 8000, reconnectMaxMs: 50 })
  after(async () => { await proxy.destroy() })
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  const reader = new FrameReader(client)
  client.write(cmd('PING'))
  assert.equal(await reader.next(), '+PONG\r\n')

  // Writes wait on a; the client's pipeline is there when a becomes b's replica.
  await directA.call('CLIENT', 'PAUSE', '10000', 'WRITE')
  client.write(Buffer.concat([cmd('SET', 'first', '1'), cmd('PUBLISH', 'somewhere', 'x'), cmd('SET', 'second', '2'), cmd('GET', 'second')]))
  await waitFor(async () => ((await directA.client('LIST')) as string).split('\n').some((l) => / name=respool /.test(l) && !/ qbuf=0 /.test(l)), 'the pipeline waits on a')
  await directB.call('REPLICAOF', 'NO', 'ONE')
  await directA.call('REPLICAOF', '127.0.0.1', String(b.port))
  await directA.call('CLIENT', 'UNPAUSE')
  // On the replica: SET refused, PUBLISH runs, SET refused, GET runs. The first SET cannot go
  // after the PUBLISH that ran: it gets its refusal. The second SET and the GET behind it wait
  // for a master, and run there in order.
  await waitFor(() => proxy.topology.failovers === 1, 'respool saw that a is a replica')
  await new Promise((resolve) => setTimeout(resolve, 300))
  await directA.call('REPLICAOF', 'NO', 'ONE')
  await directB.call('REPLICAOF', '127.0.0.1', String(a.port))
  assert.deepEqual(await reader.take(4, 10000), ['-READONLY You can\'t write against a read only replica.\r\n', ':0\r\n', '+OK\r\n', '$1\r\n2\r\n'])
  assert.equal(await directA.get('first'), null)
  assert.equal(await directA.get('second'), '2')
  assert.deepEqual(await reader.framesBeforeSentinel(), [])
})

test('-MASTERDOWN: a read a replica cut off from its master refuses (replica-serve-stale-data no) is sent again once a master is back', { timeout: 30000 }, async () => {
  const a = await startRedis()
  after(async () => { await a.stop() })
  const direct = new Redis({ port: a.port, host: '127.0.0.1' })
  after(() => { direct.disconnect() })
  const proxy = await startProxy({ upstream: a.url, poolSize: 4, acquireTimeoutMs: 8000, reconnectMaxMs: 50 })
  after(async () => { await proxy.destroy() })
  const bystanders = await startCheckedBystanders(proxy.address.port, { count: 2, pipeline: 20 })
  after(async () => { await bystanders.stop() })
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  const reader = new FrameReader(client)
  client.write(cmd('SET', 'stale', 'before'))
  assert.equal(await reader.next(), '+OK\r\n')

  // The client's pipeline waits on a while a turns into the replica of a master that is down.
  await direct.call('CLIENT', 'PAUSE', '10000', 'WRITE')
  client.write(Buffer.concat([cmd('SET', 'stale', 'after'), cmd('GET', 'stale'), cmd('STRLEN', 'stale'), cmd('EVAL', "return redis.call('INCR', KEYS[1])", '1', 'by-script')]))
  await waitFor(async () => ((await direct.client('LIST')) as string).split('\n').some((l) => / name=respool /.test(l) && !/ qbuf=0 /.test(l)), 'the pipeline waits on a')
  const nobody = await freePort()
  await direct.config('SET', 'replica-serve-stale-data', 'no')
  await direct.call('REPLICAOF', '127.0.0.1', String(nobody))
  await direct.call('CLIENT', 'UNPAUSE')
  // SET: -READONLY; GET and STRLEN: -MASTERDOWN; the script's INCR: -READONLY (… script: …).
  // All four wait, then run on the master.
  await waitFor(() => proxy.topology.failovers === 1, 'respool saw that a is a replica')
  await new Promise((resolve) => setTimeout(resolve, 300))
  await direct.call('REPLICAOF', 'NO', 'ONE')
  assert.deepEqual(await reader.take(4, 10000), ['+OK\r\n', '$5\r\nafter\r\n', ':5\r\n', ':1\r\n'])
  assert.equal(await direct.get('by-script'), '1')
  await bystanders.moreRounds(2, 15000)
  assert.deepEqual(await bystanders.stop(), [])
})

test('-LOADING past --retry-budget: the client gets Redis\'s refusal as is', { timeout: 60000 }, async () => {
  const { redis, direct, restartLoading } = await slowLoadingRedis()
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4, reconnectMaxMs: 50, retryBudgetMs: 300 })
  after(async () => { await proxy.destroy() })
  assert.equal(await commandOn(proxy.address.port, 'GET', 'known'), '$8\r\nvalue\r\n\x00\r\n')
  await restartLoading()
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  const sentAt = performance.now()
  client.write(Buffer.concat([cmd('GET', 'known'), cmd('INCR', 'budget')]))
  const replies = await new FrameReader(client).take(2, 10000)
  const waited = performance.now() - sentAt
  assert.deepEqual(replies, ['-LOADING Redis is loading the dataset in memory\r\n', '-LOADING Redis is loading the dataset in memory\r\n'])
  assert.ok(waited >= 300, `the refusal came after the budget (${Math.round(waited)} ms)`)
  assert.match(await direct.info('persistence'), /^loading:1/m, 'Redis was still loading')
  // Once loaded, the same commands run (INCR did not run before: 1).
  await waitFor(async () => /^loading:0/m.test(await direct.info('persistence')), 'loaded', 30000)
  client.write(Buffer.concat([cmd('GET', 'known'), cmd('INCR', 'budget')]))
  assert.deepEqual(await new FrameReader(client).take(2, 10000), ['$8\r\nvalue\r\n\x00\r\n', ':1\r\n'])
})
