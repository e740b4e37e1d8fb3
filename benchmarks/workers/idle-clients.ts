/**
 * Child process for the memory scenario: opens N raw TCP connections to 127.0.0.1:PORT, sends one
 * PING on each (so the server has really set up a session for it) and then keeps them idle.
 *
 *   node idle-clients.js <port> <count>
 *
 * Prints `READY {"connected":…,"ponged":…,"errors":{…}}` on stdout once every connection has
 * answered (or failed), then waits. Exits, closing everything, on SIGTERM or when stdin closes
 * (the parent went away).
 */
import net from 'node:net'

const port = Number(process.argv[2])
const count = Number(process.argv[3])
const CONCURRENCY = 200
const sockets: net.Socket[] = []
const errors: Record<string, number> = {}
let connected = 0
let ponged = 0

function countError (err: Error & { code?: string }): void {
  const key = err.code ?? err.message.slice(0, 80)
  errors[key] = (errors[key] ?? 0) + 1
}

function openOne (): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    let settled = false
    const finish = (): void => {
      if (!settled) {
        settled = true
        resolve()
      }
    }
    socket.setNoDelay(true)
    socket.on('error', (err) => { countError(err); finish() })
    socket.on('close', finish)
    socket.setTimeout(20000, () => { countError(new Error('timeout')); socket.destroy(); finish() })
    socket.once('connect', () => {
      connected++
      sockets.push(socket)
      socket.write('*1\r\n$4\r\nPING\r\n')
    })
    let reply = ''
    socket.on('data', (d: Buffer) => {
      reply += d.toString('latin1')
      if (!reply.includes('\r\n')) return
      if (reply.startsWith('+PONG')) ponged++
      else countError(new Error(`reply: ${reply.trim().slice(0, 60)}`))
      socket.setTimeout(0)
      reply = ''
      finish()
    })
  })
}

async function main (): Promise<void> {
  let next = 0
  const lanes: Array<Promise<void>> = []
  for (let i = 0; i < CONCURRENCY; i++) {
    lanes.push((async () => {
      while (next < count) {
        next++
        await openOne()
      }
    })())
  }
  await Promise.all(lanes)
  process.stdout.write(`READY ${JSON.stringify({ connected, ponged, errors })}\n`)
}

function shutdown (): void {
  for (const s of sockets) s.destroy()
  process.exit(0)
}

process.on('SIGTERM', shutdown)
process.stdin.on('end', shutdown)
process.stdin.on('close', shutdown)
process.stdin.resume()
main().catch((err: Error) => {
  process.stdout.write(`FAILED ${err.message}\n`)
  process.exit(1)
})
