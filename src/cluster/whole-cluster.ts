import type { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand, errorReply, integer } from '../protocol/resp-encode.js'
import { SLOT_COUNT, type ClusterNode, type ClusterTopology } from './cluster-topology.js'
import { clusterDisabledInInfo, infoHasKeyspace, infoText, mergeKeyspaceSections, withKeyspace } from './info-reply.js'
import { decodeScanCursor, encodeScanCursor, scanReply } from './scan-cursor.js'
import { ScriptCache, type SendToSlot } from './script-cache.js'

type Done = (reply: Buffer) => void

/** A master and the lowest slot it serves: commands for it go "to that slot", so after a failover they reach its successor. */
interface Master {
  node: ClusterNode
  slot: number
}

const MINUS = 0x2d
const CLUSTER_DOWN = errorReply('CLUSTERDOWN The cluster is down')
const INFO_KEYSPACE = encodeCommand(['INFO', 'keyspace'])

/** How the masters' replies become one: Redis 7's response_policy of each command. */
type Policy = 'all_succeeded' | 'agg_sum' | 'concat' | 'agg_logical_and'

/**
 * The commands that concern the whole keyspace (Redis 7 tips them request_policy all_shards or
 * all_nodes), answered for every master as one Redis holding all the data would answer:
 *
 * - DBSIZE sums; KEYS concatenates; FLUSHALL, FLUSHDB, SCRIPT LOAD/FLUSH and FUNCTION
 *   LOAD/DELETE/FLUSH/RESTORE run on every master (the first error, else the first master's reply);
 *   SCRIPT EXISTS is the AND of the masters' answers per SHA.
 * - RANDOMKEY asks every master at once and takes the first non-nil answer in a random order of
 *   the masters (all at once, so the client's later commands cannot overtake a second try).
 * - SCAN visits the masters one after another with a composite cursor (scan-cursor.ts).
 * - INFO with the Keyspace section (INFO, INFO keyspace/default/all/everything) takes the other
 *   sections from one master and the Keyspace section summed over all of them.
 *
 * Each part goes to the master of that master's lowest slot, through the same lanes, redirects and
 * retries as any command; parts run in parallel on every master's lane, so they queue behind the
 * client's earlier commands there and ahead of its later ones.
 */
export class WholeCluster {
  readonly #topology: ClusterTopology
  readonly #send: SendToSlot
  readonly scripts: ScriptCache

  constructor (topology: ClusterTopology, send: SendToSlot) {
    this.#topology = topology
    this.#send = send
    this.scripts = new ScriptCache(send)
  }

  /**
   * Runs `cmd` if it is a whole-cluster command: a reply now, or null when `done` will be
   * called. Undefined for any other command (routed by its keys as usual).
   */
  run (cmd: RespCommand, resp: 2 | 3, done: Done, onRedirect: () => void): Buffer | null | undefined {
    const go = (policy: Policy, after?: (reply: Buffer) => void): Buffer | null => this.#fanOut(cmd.frame, policy, resp, (reply) => {
      after?.(reply)
      done(reply)
    }, onRedirect)
    switch (cmd.name) {
      case 'dbsize':
        return go('agg_sum')
      case 'keys':
        return go('concat')
      case 'flushall':
      case 'flushdb':
        return go('all_succeeded')
      case 'randomkey':
        return this.#randomKey(cmd.frame, resp, done, onRedirect)
      case 'scan':
        return this.#scan(cmd, resp, done, onRedirect)
      case 'info':
        return this.#info(cmd, resp, done, onRedirect)
      case 'script':
        if (cmd.argc < 2) return undefined // Redis's arity error, from any master
        switch (cmd.keyword(1)) {
          case 'load':
            return go('all_succeeded', (reply) => {
              if (cmd.argc === 3 && reply[0] === 0x24 /* $ */) this.scripts.remember(reply.toString('latin1', reply.indexOf(10) + 1, reply.length - 2), cmd.arg(2))
            })
          case 'flush':
            return go('all_succeeded', (reply) => { if (reply[0] !== MINUS) this.scripts.forgetAll() })
          case 'exists':
            return go('agg_logical_and')
          case 'help':
          case 'kill': // with the wrong arity: Redis's error (a valid one is run by ClusterClient)
            return undefined
          default:
            return errorReply(`ERR respool: 'SCRIPT ${cmd.keyword(1).toUpperCase()}' is not supported in cluster mode`)
        }
      case 'function':
        if (cmd.argc < 2) return undefined
        switch (cmd.keyword(1)) {
          case 'load':
          case 'delete':
          case 'flush':
          case 'restore':
            return go('all_succeeded')
          case 'list':
          case 'dump':
          case 'stats':
          case 'help':
            // The same libraries are on every master when they were loaded through respool.
            return undefined
          case 'kill': // with the wrong arity, as SCRIPT KILL
            return undefined
          default:
            return errorReply(`ERR respool: 'FUNCTION ${cmd.keyword(1).toUpperCase()}' is not supported in cluster mode`)
        }
      default:
        return undefined
    }
  }

  /** The masters, ordered by the lowest slot each serves (a stable order while the slots stay put). */
  masters (): Master[] {
    const seen = new Set<string>()
    const out: Master[] = []
    for (let slot = 0; slot < SLOT_COUNT; slot++) {
      const node = this.#topology.nodeFor(slot)
      if (node === null || seen.has(node.key)) continue
      seen.add(node.key)
      out.push({ node, slot })
      if (seen.size === this.#topology.masters.size) break
    }
    return out
  }

  /** Sends `frame` to every master and calls `done` with the merged reply. */
  #fanOut (frame: Buffer, policy: Policy, resp: 2 | 3, done: Done, onRedirect: () => void): Buffer | null {
    const masters = this.masters()
    if (masters.length === 0) return CLUSTER_DOWN
    this.#all(masters, frame, resp, (replies) => { done(merge(policy, replies)) }, onRedirect)
    return null
  }

  /** Sends `frame` to each of `masters` at once; `done` gets the replies in the masters' order. */
  #all (masters: Master[], frame: Buffer, resp: 2 | 3, done: (replies: Buffer[]) => void, onRedirect: () => void): void {
    const replies = new Array<Buffer>(masters.length)
    let left = masters.length
    masters.forEach((m, i) => {
      this.#send(frame, m.slot, resp, (reply) => {
        replies[i] = reply
        if (--left === 0) done(replies)
      }, onRedirect)
    })
  }

  #randomKey (frame: Buffer, resp: 2 | 3, done: Done, onRedirect: () => void): Buffer | null {
    const masters = this.masters()
    if (masters.length === 0) return CLUSTER_DOWN
    for (let i = masters.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      ;[masters[i], masters[j]] = [masters[j], masters[i]]
    }
    this.#all(masters, frame, resp, (replies) => {
      // A key if any master has one, else the first error, else the nil one Redis sends.
      done(replies.find((r) => r[0] === 0x24 /* $ */ && r[1] !== MINUS) ?? replies.find((r) => r[0] === MINUS) ?? replies[0])
    }, onRedirect)
    return null
  }

  #scan (cmd: RespCommand, resp: 2 | 3, done: Done, onRedirect: () => void): Buffer | null {
    const masters = this.masters()
    if (masters.length === 0) return CLUSTER_DOWN
    if (cmd.argc < 2) {
      // Redis's own arity error, from any master.
      this.#send(cmd.frame, -1, resp, done, onRedirect)
      return null
    }
    const cursor = decodeScanCursor(cmd.argString(1))
    if (cursor === null) return errorReply('ERR invalid cursor')
    if (cursor.master >= masters.length) {
      // A cursor of a master that is gone (the cluster has fewer masters than when the scan began): the scan is over.
      return scanReply(0n, Buffer.from('*0\r\n'))
    }
    const args = cmd.args()
    args[1] = Buffer.from(String(cursor.node))
    this.#send(encodeCommand(args), masters[cursor.master].slot, resp, (reply) => {
      done(rewriteScanReply(reply, cursor.master, masters.length))
    }, onRedirect)
    return null
  }

  #info (cmd: RespCommand, resp: 2 | 3, done: Done, onRedirect: () => void): Buffer | null | undefined {
    const sections: string[] = []
    for (let i = 1; i < cmd.argc; i++) sections.push(cmd.keyword(i))
    if (!infoHasKeyspace(sections)) return undefined
    const masters = this.masters()
    if (masters.length === 0) return CLUSTER_DOWN
    let main: Buffer | null = null
    let keyspaces: Buffer[] | null = null
    const finish = (): void => {
      if (main === null || keyspaces === null) return
      if (main[0] === MINUS) {
        done(main)
        return
      }
      const failed = keyspaces.find((r) => infoText(r) === null)
      done(failed !== undefined && failed[0] === MINUS ? failed : clusterDisabledInInfo(withKeyspace(main, mergeKeyspaceSections(keyspaces.map((r) => infoText(r) ?? '')))))
    }
    this.#send(cmd.frame, masters[0].slot, resp, (reply) => { main = reply; finish() }, onRedirect)
    this.#all(masters, INFO_KEYSPACE, resp, (replies) => { keyspaces = replies; finish() }, onRedirect)
    return null
  }
}

/** A node's SCAN reply with its cursor replaced by the composite one; the keys go back as they came. */
function rewriteScanReply (reply: Buffer, master: number, masters: number): Buffer {
  if (reply[0] !== 0x2a /* * */) return reply
  const parsed = splitScanReply(reply)
  if (parsed === null) return reply
  let next: bigint
  if (parsed.cursor !== 0n) next = encodeScanCursor(master, parsed.cursor) ?? -1n
  else next = master + 1 < masters ? (encodeScanCursor(master + 1, 0n) as bigint) : 0n
  if (next < 0n) return errorReply('ERR respool: a cluster node answered a SCAN cursor too large for respool\'s composite cursor')
  return scanReply(next, parsed.keys)
}

/** `*2 $n cursor <keys array>`: the cursor, and the keys array's bytes. */
function splitScanReply (reply: Buffer): { cursor: bigint, keys: Buffer } | null {
  const first = reply.indexOf('\r\n')
  if (reply.toString('latin1', 0, first) !== '*2' || reply[first + 2] !== 0x24 /* $ */) return null
  const lenEnd = reply.indexOf('\r\n', first + 2)
  const len = Number(reply.toString('latin1', first + 3, lenEnd))
  const cursorText = reply.toString('latin1', lenEnd + 2, lenEnd + 2 + len)
  if (!/^\d+$/.test(cursorText)) return null
  return { cursor: BigInt(cursorText), keys: reply.subarray(lenEnd + 2 + len + 2) }
}

/** The masters' replies (in the masters' order) as one reply. */
function merge (policy: Policy, replies: Buffer[]): Buffer {
  const failed = replies.find((r) => r[0] === MINUS || r[0] === 0x21 /* ! */)
  if (failed !== undefined) return failed
  switch (policy) {
    case 'all_succeeded':
      return replies[0]
    case 'agg_sum': {
      let sum = 0n
      for (const r of replies) sum += BigInt(r.toString('latin1', 1, r.indexOf(13)))
      return integer(sum)
    }
    case 'concat':
      return concatArrays(replies)
    case 'agg_logical_and':
      return andIntegerArrays(replies)
  }
}

/** Arrays (KEYS) as one array: the element counts summed, the elements' bytes one after another. */
function concatArrays (replies: Buffer[]): Buffer {
  let count = 0
  const bodies: Buffer[] = []
  for (const r of replies) {
    const lineEnd = r.indexOf('\r\n')
    count += Math.max(0, Number(r.toString('latin1', 1, lineEnd)))
    bodies.push(r.subarray(lineEnd + 2))
  }
  return Buffer.concat([Buffer.from(`*${count}\r\n`), ...bodies])
}

/** Arrays of 0/1 integers (SCRIPT EXISTS) combined element by element: 1 only where every master has 1. */
function andIntegerArrays (replies: Buffer[]): Buffer {
  const lists = replies.map((r) => r.toString('latin1').split('\r\n').slice(1, -1))
  const out = lists[0].map((v, i) => lists.every((l) => l[i] === ':1') ? ':1' : v === ':1' ? ':0' : v)
  return Buffer.from(`${replies[0].toString('latin1', 0, replies[0].indexOf('\r\n'))}\r\n${out.map((v) => `${v}\r\n`).join('')}`, 'latin1')
}
