import net from 'node:net'
import { once } from 'node:events'

/**
 * A scripted RESP server for faults real Redis will not produce on demand: never answering,
 * closing halfway through a reply, answering what nobody asked. It answers the proxy's
 * handshake (CLIENT SETNAME, ROLE, INFO, CONFIG GET) like a Redis master, then hands every other command to
 * `onCommand`, which writes whatever the test wants.
 */
export interface FakeRedis {
  port: number
  connections: number
  close (): Promise<void>
}

export type CommandHandler = (args: string[], socket: net.Socket) => void

export async function startFakeRedis (onCommand: CommandHandler): Promise<FakeRedis> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let buffer = ''
    socket.on('data', (chunk) => {
      buffer += chunk.toString('latin1')
      for (;;) {
        const parsed = parseCommand(buffer)
        if (parsed === null) break
        buffer = buffer.slice(parsed.length)
        const name = parsed.args[0]?.toUpperCase()
        if (name === 'CLIENT' || name === 'SELECT' || name === 'AUTH') socket.write('+OK\r\n')
        else if (name === 'INFO') socket.write('$37\r\n# Server\r\nredis_version:7.0.0-fake\r\n\r\n')
        else if (name === 'CONFIG') socket.write('*2\r\n$9\r\ndatabases\r\n$2\r\n16\r\n')
        else if (name === 'ROLE') socket.write('*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n')
        else onCommand(parsed.args, socket)
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as net.AddressInfo).port,
    get connections () { return sockets.size },
    async close () {
      for (const s of sockets) s.destroy()
      server.close()
      await once(server, 'close')
    }
  }
}

function parseCommand (text: string): { args: string[], length: number } | null {
  if (!text.startsWith('*')) return null
  let pos = text.indexOf('\r\n')
  if (pos < 0) return null
  const count = Number(text.slice(1, pos))
  pos += 2
  const args: string[] = []
  for (let i = 0; i < count; i++) {
    const end = text.indexOf('\r\n', pos)
    if (end < 0) return null
    const len = Number(text.slice(pos + 1, end))
    if (text.length < end + 2 + len + 2) return null
    args.push(text.slice(end + 2, end + 2 + len))
    pos = end + 2 + len + 2
  }
  return { args, length: pos }
}
