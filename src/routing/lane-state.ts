import { UpstreamClosedError, type ProxyError } from '../errors.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'

const MINUS = 0x2d

/**
 * Makes a connection speak `resp` and sit in database `db` before a command that needs them
 * runs there. Lanes are shared by clients in different states; the switch is a pipelined HELLO
 * and/or SELECT whose replies respool checks and drops. Only values Redis has accepted before
 * (a client's confirmed SELECT, the URL's database, protocol 2 or 3) are used, so a failure
 * means the connection is not what the commands behind the switch expect: it is dropped.
 */
export function syncLaneState (conn: UpstreamConnection, db: number, resp: 2 | 3): void {
  if (conn.resp !== resp) {
    conn.resp = resp
    conn.sendInternal(['HELLO', String(resp)], (frame, err) => { checkSwitch(conn, frame, err, 'HELLO') })
  }
  if (conn.db !== db) {
    conn.db = db
    conn.sendInternal(['SELECT', String(db)], (frame, err) => { checkSwitch(conn, frame, err, 'SELECT') })
  }
}

function checkSwitch (conn: UpstreamConnection, frame: Buffer | null, err: ProxyError | null, what: string): void {
  if (err === null && frame !== null && frame[0] !== MINUS) return
  // No reply: the connection is closing already, or is being left (and was not written to).
  if (err !== null) return
  conn.destroy(new UpstreamClosedError(`${what} on upstream connection failed: ${frame?.toString('latin1', 0, Math.min(frame.length, 120)).trim() ?? 'no reply'}`))
}
