/**
 * INFO in cluster mode: the client talks to one ordinary Redis, so a node's `cluster_enabled:1`
 * becomes 0, and the Keyspace section counts the keys of every master.
 */

const KEYSPACE_HEADER = '# Keyspace\r\n'

/** INFO from a cluster node says cluster_enabled:1; the client is talking to one ordinary Redis. */
export function clusterDisabledInInfo (reply: Buffer): Buffer {
  const at = reply.indexOf('cluster_enabled:1')
  if (at === -1) return reply
  const out = Buffer.from(reply)
  out[at + 'cluster_enabled:'.length] = 0x30 // '0': same length, so the frame's length prefix stays right
  return out
}

/**
 * Whether INFO with these (lowercased) section arguments includes the Keyspace section: no
 * argument (default), default, all, everything or keyspace itself.
 */
export function infoHasKeyspace (sections: string[]): boolean {
  if (sections.length === 0) return true
  return sections.some((s) => s === 'keyspace' || s === 'default' || s === 'all' || s === 'everything')
}

/**
 * The `dbN:keys=…,expires=…,avg_ttl=…` lines of several masters as one Redis would print them:
 * counts summed, `avg_ttl` the average of the masters' figures weighted by their expiring keys
 * (each node's own figure is an estimate from sampling, as in one Redis). A database no master
 * has keys in is left out, as Redis leaves it out.
 */
export function mergeKeyspaceSections (sections: string[]): string {
  const dbs = new Map<string, Map<string, number>>()
  const ttlWeight = new Map<string, number>()
  for (const section of sections) {
    for (const line of section.split('\r\n')) {
      const m = /^(db\d+):(.*)$/.exec(line)
      if (m === null) continue
      const fields = dbs.get(m[1]) ?? new Map<string, number>()
      dbs.set(m[1], fields)
      const own = new Map(m[2].split(',').map((kv) => {
        const eq = kv.indexOf('=')
        return [kv.slice(0, eq), Number(kv.slice(eq + 1))] as [string, number]
      }))
      for (const [k, v] of own) {
        if (k === 'avg_ttl') {
          const expires = own.get('expires') ?? 0
          ttlWeight.set(m[1], (ttlWeight.get(m[1]) ?? 0) + v * expires)
          if (!fields.has(k)) fields.set(k, 0)
        } else {
          fields.set(k, (fields.get(k) ?? 0) + v)
        }
      }
    }
  }
  const names = [...dbs.keys()].sort((a, b) => Number(a.slice(2)) - Number(b.slice(2)))
  let out = KEYSPACE_HEADER
  for (const name of names) {
    const fields = dbs.get(name) as Map<string, number>
    const expires = fields.get('expires') ?? 0
    if (fields.has('avg_ttl')) fields.set('avg_ttl', expires > 0 ? Math.round((ttlWeight.get(name) ?? 0) / expires) : 0)
    out += `${name}:${[...fields].map(([k, v]) => `${k}=${v}`).join(',')}\r\n`
  }
  return out
}

/** The text of an INFO reply (a bulk string, or in RESP3 a verbatim string `=…txt:`), or null for another reply. */
export function infoText (reply: Buffer): string | null {
  if (reply[0] !== 0x24 /* $ */ && reply[0] !== 0x3d /* = */) return null
  const lineEnd = reply.indexOf('\r\n')
  const length = Number(reply.toString('latin1', 1, lineEnd))
  if (!(length >= 0)) return null
  const body = reply.toString('latin1', lineEnd + 2, lineEnd + 2 + length)
  return reply[0] === 0x3d ? body.slice(4) : body
}

/**
 * The INFO reply `reply` (from one master) with its Keyspace section replaced by `keyspace`, in
 * the same encoding (bulk or verbatim) with the length prefix recomputed. Text is handled as
 * latin1, so every byte of the rest goes back unchanged.
 */
export function withKeyspace (reply: Buffer, keyspace: string): Buffer {
  const text = infoText(reply)
  if (text === null) return reply
  const start = text.indexOf(KEYSPACE_HEADER)
  if (start === -1) return reply
  // A section runs until the blank line that separates it from the next one, or the end.
  const gap = text.indexOf('\r\n\r\n', start)
  const end = gap === -1 ? text.length : gap + 2
  const merged = text.slice(0, start) + keyspace + text.slice(end)
  const body = Buffer.from(reply[0] === 0x3d ? `txt:${merged}` : merged, 'latin1')
  return Buffer.concat([Buffer.from(`${String.fromCharCode(reply[0])}${body.length}\r\n`), body, Buffer.from('\r\n')])
}
