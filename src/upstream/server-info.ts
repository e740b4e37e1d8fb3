import RedisParser from 'redis-parser'
import type { UpstreamConnection } from './upstream-connection.js'

/** What respool tells clients about the server behind it (HELLO), learned once from the upstream. */
export interface ServerInfo {
  version: string
  mode: string
  role: string
  /** Number of databases (CONFIG GET databases), or null when CONFIG is not allowed. */
  databases: number | null
}

export const UNKNOWN_SERVER: ServerInfo = { version: '0.0.0', mode: 'standalone', role: 'master', databases: null }

/**
 * Asks an upstream connection for INFO server/replication and CONFIG GET databases. These are
 * replies the proxy itself must understand, so they are decoded with redis-parser (the reply
 * path to clients never decodes).
 */
export async function fetchServerInfo (conn: UpstreamConnection): Promise<ServerInfo> {
  const [info, databases] = await Promise.all([
    ask(conn, ['INFO', 'server']),
    ask(conn, ['CONFIG', 'GET', 'databases'])
  ])
  const text = typeof info === 'string' ? info : ''
  const field = (name: string): string | undefined => new RegExp(`^${name}:(.*)$`, 'm').exec(text)?.[1]?.trim()
  let dbCount: number | null = null
  if (Array.isArray(databases) && databases.length === 2) dbCount = Number(databases[1])
  return {
    version: field('redis_version') ?? UNKNOWN_SERVER.version,
    mode: field('redis_mode') ?? UNKNOWN_SERVER.mode,
    role: 'master',
    databases: dbCount !== null && Number.isInteger(dbCount) && dbCount > 0 ? dbCount : null
  }
}

function ask (conn: UpstreamConnection, args: string[]): Promise<unknown> {
  return new Promise((resolve) => {
    conn.sendInternal(args, (frame) => {
      if (frame === null) { resolve(null); return }
      let value: unknown = null
      const parser = new RedisParser({
        returnReply: (reply: unknown) => { value = reply },
        returnError: () => { value = null },
        returnBuffers: false
      })
      parser.execute(frame)
      resolve(value)
    })
  })
}
