import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SessionEffects, E_SELECT, E_SELECT_QUEUED, E_MULTI, E_EXEC, E_WATCH, E_BLOCKING, R_MULTI, R_WATCH, R_BLOCKING, type Lease } from '../../src/session-effects.js'
import { SessionState } from '../../src/session-state.js'
import { ProxyStats } from '../../src/proxy-stats.js'
import { ReplySlot, InternalSink } from '../../src/reply-slot.js'
import { RespCommand } from '../../src/resp-command.js'
import type { UpstreamConnection } from '../../src/upstream-connection.js'
import type { Pin } from '../../src/router.js'

/** The connection fields effects touch, and a record of the internal commands sent. */
function fakeConn (): UpstreamConnection & { internal: string[][] } {
  const internal: string[][] = []
  return { db: 0, blockingInflight: 0, tunnel: null, pushHandler: null, internal, sendInternal: (args: string[]) => { internal.push(args) } } as unknown as UpstreamConnection & { internal: string[][] }
}

function setup (): { effects: SessionEffects, state: SessionState, stats: ProxyStats, conn: ReturnType<typeof fakeConn>, lease: Lease } {
  const state = new SessionState(0, false)
  const stats = new ProxyStats()
  const effects = new SessionEffects({ state, stats, onPubsubFrame: () => true, onMonitorFrame: () => true, outOfBand: () => {}, maybeLeavePubsub: () => {} })
  const conn = fakeConn()
  const lease: Lease = { pin: { conn } as unknown as Pin, reasons: 0 }
  return { effects, state, stats, conn, lease }
}

function slot (effect: number, data = 0, ...args: string[]): ReplySlot {
  const frame = Buffer.from(`*${args.length}\r\n${args.map((a) => `$${a.length}\r\n${a}\r\n`).join('')}`)
  const offsets: number[] = []
  let pos = frame.indexOf('\r\n') + 2
  for (const a of args) {
    pos = frame.indexOf('\r\n', pos) + 2
    offsets.push(pos, pos + a.length)
    pos += a.length + 2
  }
  const s = new ReplySlot(new InternalSink(() => {}), new RespCommand(frame, offsets))
  s.effect = effect
  s.data = data
  return s
}

const ERR = Buffer.from('-ERR DB index is out of range\r\n')

test('SessionEffects: SELECT moves the database when written and puts it back if Redis refuses it', () => {
  const { effects, state, conn } = setup()
  const select = slot(E_SELECT, 3, 'SELECT', '3')
  effects.onSend(select, conn, null)
  assert.equal(state.db, 3)
  assert.equal(conn.db, 3)
  effects.onReply(select, ERR, null, conn)
  assert.equal(state.db, 0)
  assert.equal(conn.db, -1, 'the connection\'s database is unknown: the next command selects again')
})

test('SessionEffects: MULTI and WATCH add pin reasons once; EXEC ends both and applies a queued SELECT', () => {
  const { effects, state, stats, conn, lease } = setup()
  effects.onSend(slot(E_WATCH, 0, 'WATCH', 'k'), conn, lease)
  effects.onSend(slot(E_WATCH, 0, 'WATCH', 'k2'), conn, lease)
  effects.onSend(slot(E_MULTI, 0, 'MULTI'), conn, lease)
  assert.equal(lease.reasons, R_MULTI | R_WATCH)
  assert.equal(stats.pinsByReason.reduce((a, b) => a + b, 0), 2, 'each reason counted once')
  const queued = slot(E_SELECT_QUEUED, 5, 'SELECT', '5')
  effects.onSend(queued, conn, lease)
  effects.onReply(queued, Buffer.from('+QUEUED\r\n'), lease, conn)
  assert.equal(state.db, 0, 'not before EXEC')
  effects.onReply(slot(E_EXEC, 0, 'EXEC'), Buffer.from('*1\r\n+OK\r\n'), lease, conn)
  assert.equal(lease.reasons, 0)
  assert.equal(state.db, 5)
  assert.equal(conn.db, -1)
  assert.equal(effects.txnDb, -1)
})

test('SessionEffects: WAIT sends the fence first; a blocking reason lasts while blocking commands are in flight', () => {
  const { effects, conn, lease } = setup()
  const wait = slot(E_BLOCKING, 0, 'WAIT', '1', '100')
  const blpop = slot(E_BLOCKING, 0, 'BLPOP', 'q', '0')
  effects.onSend(wait, conn, lease)
  assert.deepEqual(conn.internal, [['PUBLISH', '__respool__:wait-fence', '']])
  effects.onSend(blpop, conn, lease)
  assert.equal(conn.blockingInflight, 2)
  effects.onReply(wait, Buffer.from(':1\r\n'), lease, conn)
  assert.equal(lease.reasons, R_BLOCKING)
  effects.onReply(blpop, Buffer.from('*-1\r\n'), lease, conn)
  assert.equal(lease.reasons, 0)
  assert.equal(conn.blockingInflight, 0)
})
