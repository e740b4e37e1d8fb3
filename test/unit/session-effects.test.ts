import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SessionEffects, E_SELECT, E_SELECT_QUEUED, E_MULTI, E_EXEC, E_WATCH, E_BLOCKING, R_MULTI, R_WATCH, R_BLOCKING, dbAfterExec, type Lease } from '../../src/client/session-effects.js'
import { SessionState } from '../../src/client/session-state.js'
import { ProxyStats } from '../../src/ops/proxy-stats.js'
import { ReplySlot, InternalSink } from '../../src/routing/reply-slot.js'
import { RespCommand } from '../../src/protocol/resp-command.js'
import type { UpstreamConnection } from '../../src/upstream/upstream-connection.js'
import type { Pin } from '../../src/routing/router.js'

/** The connection fields effects touch, and a record of the internal commands sent. */
function fakeConn (): UpstreamConnection & { internal: string[][] } {
  const internal: string[][] = []
  let epoch = 0
  let db = 0
  const conn = {
    get db () { return db },
    set db (v: number) { db = v; epoch++ },
    markDbUnknown () { conn.db = -1; return epoch },
    confirmDb (e: number, v: number) { if (e === epoch) db = v },
    blockingInflight: 0,
    tunnel: null,
    pushHandler: null,
    internal,
    sendInternal: (args: string[]) => { internal.push(args) }
  }
  return conn as unknown as UpstreamConnection & { internal: string[][] }
}

function setup (): { effects: SessionEffects, state: SessionState, stats: ProxyStats, conn: ReturnType<typeof fakeConn>, lease: Lease } {
  const state = new SessionState(0, false)
  const stats = new ProxyStats()
  const effects = new SessionEffects({ state, stats, pubsubTunnel: () => true, monitorTunnel: () => true, outOfBandHandler: () => {}, maybeLeavePubsub: () => {} })
  const conn = fakeConn()
  const lease: Lease = { pin: { conn } as unknown as Pin, reasons: 0, dirty: false }
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


const OK = Buffer.from('+OK\r\n')

test('SessionEffects: SELECT changes nothing until Redis accepts it; the connection\'s database is unknown meanwhile', () => {
  const { effects, state, conn } = setup()
  const refused = slot(E_SELECT, 1, 'SELECT', '01')
  effects.onSend(refused, conn, null)
  assert.equal(state.db, 0)
  assert.equal(conn.db, -1, 'nobody may rely on the connection being in db 1 before Redis says so')
  effects.onReply(refused, Buffer.from('-ERR value is not an integer or out of range\r\n'), null, conn)
  assert.equal(state.db, 0)
  assert.equal(conn.db, -1, 'the next command selects again')

  const accepted = slot(E_SELECT, 3, 'SELECT', '3')
  effects.onSend(accepted, conn, null)
  effects.onReply(accepted, OK, null, conn)
  assert.equal(state.db, 3)
  assert.equal(conn.db, 3)
})

test('SessionEffects: a SELECT reply does not overwrite a database another client selected after it', () => {
  const { effects, state, conn } = setup()
  const mine = slot(E_SELECT, 3, 'SELECT', '3')
  effects.onSend(mine, conn, null)
  conn.db = 7 // another client's SELECT 7, pipelined behind mine on the same lane
  effects.onReply(mine, OK, null, conn)
  assert.equal(state.db, 3)
  assert.equal(conn.db, 7)
})

test('SessionEffects: MULTI and WATCH add pin reasons once; EXEC ends both when written, and its reply applies a queued SELECT', () => {
  const { effects, state, stats, conn, lease } = setup()
  effects.onSend(slot(E_WATCH, 0, 'WATCH', 'k'), conn, lease)
  effects.onSend(slot(E_WATCH, 0, 'WATCH', 'k2'), conn, lease)
  effects.onSend(slot(E_MULTI, 0, 'MULTI'), conn, lease)
  assert.equal(lease.reasons, R_MULTI | R_WATCH)
  assert.equal(lease.dirty, true, 'given back only after a verified RESET')
  assert.equal(stats.pinsByReason.reduce((a, b) => a + b, 0), 2, 'each reason counted once')
  effects.txnQueued++ // SET, queued first
  effects.txnQueued++
  const queued = slot(E_SELECT_QUEUED, 5, 'SELECT', '5')
  effects.onSend(queued, conn, lease)
  effects.onReply(queued, Buffer.from('+QUEUED\r\n'), lease, conn)
  assert.equal(state.db, 0, 'not before EXEC')
  const exec = slot(E_EXEC, 0, 'EXEC')
  effects.onSend(exec, conn, lease)
  assert.equal(lease.reasons, 0, 'a MULTI pipelined behind this EXEC opens a new transaction')
  assert.equal(conn.db, -1)
  effects.onReply(exec, Buffer.from('*2\r\n+OK\r\n+OK\r\n'), lease, conn)
  assert.equal(state.db, 5)
})

test('dbAfterExec: the last queued SELECT that succeeded, read from EXEC\'s elements (RESP2 and RESP3)', () => {
  const selects = [{ index: 0, db: 2 }, { index: 2, db: 9 }]
  assert.equal(dbAfterExec(Buffer.from('*3\r\n+OK\r\n$1\r\nx\r\n-ERR DB index is out of range\r\n'), selects), 2)
  assert.equal(dbAfterExec(Buffer.from('*3\r\n+OK\r\n%1\r\n+a\r\n:1\r\n+OK\r\n'), selects), 9)
  assert.equal(dbAfterExec(Buffer.from('*-1\r\n'), selects), null, 'a WATCH fired: nothing ran')
  assert.equal(dbAfterExec(Buffer.from('_\r\n'), selects), null)
  assert.equal(dbAfterExec(Buffer.from('-EXECABORT Transaction discarded because of previous errors.\r\n'), selects), null)
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
