import { CommandRefusedError, toRespError, type ProxyError } from '../errors.js'
import type { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand, errorReply, integer, OK } from '../protocol/resp-encode.js'
import { ReplySlot, type ReplySink } from '../routing/reply-slot.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterLanes } from './cluster-lanes.js'
import type { ClusterNode, ClusterTopology } from './cluster-topology.js'
import { commandSlot, keyIndexes, keySlot } from './keys.js'
import { clusterDisabledInInfo } from './info-reply.js'
import { WholeCluster } from './whole-cluster.js'

/** Redis's own wording (a cluster node's reply to keys of several slots). */
export const CROSSSLOT = errorReply('CROSSSLOT Keys in request don\'t hash to the same slot')
/** What a Redis without cluster support answers to CLUSTER, READONLY and READWRITE. */
export const CLUSTER_DISABLED = errorReply('ERR This instance has cluster support disabled')

/** Redirects (MOVED, ASK) one command may follow, as ioredis and node-redis allow. */
const MAX_REDIRECTS = 16
/** TRYAGAIN, LOADING, CLUSTERDOWN and unreachable nodes: retries, this far apart. */
const MAX_RETRIES = 40
const RETRY_DELAY_MS = 50

const ASKING = encodeCommand(['ASKING'])
const MINUS = 0x2d

/**
 * Keyless commands whose answer on one node would be silently wrong for the whole cluster
 * (Redis 7 marks them request_policy all_shards/all_nodes) and that whole-cluster.ts does not
 * answer for every master: refused rather than answered for a third of the data.
 */
const WHOLE_CLUSTER = new Set(['wait', 'waitaof'])

/** Multi-key commands split by slot and merged into the reply one Redis would give. */
type Merge = 'mget' | 'mset' | 'sum'
const SPLIT: ReadonlyMap<string, Merge> = new Map<string, Merge>([
  ['mget', 'mget'], ['mset', 'mset'], ['del', 'sum'], ['unlink', 'sum'], ['exists', 'sum'], ['touch', 'sum']
])

const DROP: ReplySink = { onReply () {}, onReplyPart () {}, onFailure () {} }

export type ClusterDone = (reply: Buffer) => void

/**
 * Runs client commands against a Redis Cluster so the client sees one ordinary Redis: each
 * command goes to the master serving its keys' slot; MGET, MSET, DEL, UNLINK, EXISTS and TOUCH
 * over several slots are split per slot and merged; redirects (MOVED, ASK) and the errors of a
 * command that did not run (TRYAGAIN, LOADING, CLUSTERDOWN) are handled here and never reach
 * the client.
 */
export class ClusterDispatcher {
  readonly topology: ClusterTopology
  readonly lanes: ClusterLanes
  readonly whole: WholeCluster
  redirects = 0
  retries = 0

  constructor (topology: ClusterTopology, lanes: ClusterLanes) {
    this.topology = topology
    this.lanes = lanes
    this.whole = new WholeCluster(topology, (frame, slot, resp, done, onRedirect) => { this.send(frame, slot, resp, done, onRedirect) })
  }

  /** Sends one command to the master of `slot` (-1: any master), with redirects and retries handled. */
  send (frame: Buffer, slot: number, resp: 2 | 3, done: ClusterDone, onRedirect: () => void): void {
    new Request(this, frame, slot, resp, done, onRedirect).go()
  }

  /**
   * Runs `cmd`. Returns the reply at once when respool answers it itself (then `done` is not
   * called); otherwise null, and `done` is called once with the reply. `onRedirect` is called
   * when a command had to be sent again (the session then holds its next commands until the
   * ones in flight are answered, so a retried command is not overtaken).
   */
  run (cmd: RespCommand, resp: 2 | 3, done: ClusterDone, onRedirect: () => void): Buffer | null {
    const name = cmd.name
    if (name === 'cluster') return clusterCommand(cmd)
    if (name === 'asking') return OK
    if (WHOLE_CLUSTER.has(name)) {
      return toRespError(new CommandRefusedError(`'${name.toUpperCase()}' would need every cluster node and is not supported in cluster mode`))
    }
    const whole = this.whole.run(cmd, resp, done, onRedirect)
    if (whole !== undefined) return whole
    const slot = commandSlot(cmd)
    if (slot === -2) {
      const merge = SPLIT.get(name)
      if (merge === undefined || !this.#splittable(cmd, merge)) return CROSSSLOT
      this.#split(cmd, merge, resp, done, onRedirect)
      return null
    }
    const finish: ClusterDone = name === 'info' ? (reply) => { done(clusterDisabledInInfo(reply)) } : this.whole.scripts.around(cmd, slot ?? -1, resp, done, onRedirect)
    new Request(this, cmd.frame, slot ?? -1, resp, finish, onRedirect).go()
    return null
  }

  /** Arity as Redis checks it before anything else (a wrong one is answered by any node). */
  #splittable (cmd: RespCommand, merge: Merge): boolean {
    return merge === 'mset' ? cmd.argc >= 3 && cmd.argc % 2 === 1 : cmd.argc >= 2
  }

  /** One sub-command per slot (duplicates stay together: DEL a a = 1, EXISTS a a = 2). */
  #split (cmd: RespCommand, merge: Merge, resp: 2 | 3, done: ClusterDone, onRedirect: () => void): void {
    const step = merge === 'mset' ? 2 : 1
    const groups = new Map<number, number[]>()
    for (const i of keyIndexes(cmd) ?? []) {
      const s = keySlot(cmd.arg(i))
      let group = groups.get(s)
      if (group === undefined) groups.set(s, group = [])
      group.push(i)
    }
    const parts = [...groups]
    const replies = new Array<Buffer | null>(parts.length).fill(null)
    let left = parts.length
    parts.forEach(([slot, positions], n) => {
      const args: Buffer[] = [cmd.arg(0)]
      for (const i of positions) for (let j = 0; j < step; j++) args.push(cmd.arg(i + j))
      new Request(this, encodeCommand(args), slot, resp, (reply) => {
        replies[n] = reply
        if (--left === 0) done(mergeReplies(merge, parts.map(([, p]) => p), replies as Buffer[], cmd.argc - 1))
      }, onRedirect).go()
    })
  }
}

/** One command (or one part of a split command) on its way to the master of its slot. */
class Request implements ReplySink {
  #redirects = 0
  #retries = 0
  #asking: ClusterNode | null = null
  #pieces: Buffer[] | null = null

  constructor (
    readonly dispatcher: ClusterDispatcher,
    readonly frame: Buffer,
    /** -1: keyless (any master). */
    readonly slot: number,
    readonly resp: 2 | 3,
    readonly done: ClusterDone,
    readonly onRedirect: () => void
  ) {}

  go (): void {
    const topology = this.dispatcher.topology
    const node = this.#asking ?? (this.slot >= 0 ? topology.nodeFor(this.slot) : topology.anyMaster())
    if (node === null) {
      void topology.refresh('slot not served')
      this.#later(errorReply(`CLUSTERDOWN Hash slot not served`))
      return
    }
    const conn = this.dispatcher.lanes.ready(node)
    if (conn !== null) {
      this.#write(conn)
      return
    }
    this.dispatcher.lanes.open(node).then((c) => { this.#write(c) }, (err: ProxyError) => {
      // Nothing was sent: trying again (after the map is fetched again) is safe.
      this.#later(toRespError(err))
    })
  }

  #write (conn: UpstreamConnection): void {
    if (!conn.isReady) {
      this.#later(errorReply('ERR respool: cluster node connection closed'))
      return
    }
    syncLaneState(conn, 0, this.resp)
    if (this.#asking !== null) {
      // ASKING and the command leave in one write: nothing of anyone else's comes between.
      conn.send(ASKING, new ReplySlot(DROP, null))
      this.#asking = null
    }
    conn.send(this.frame, new ReplySlot(this, null))
  }

  /** Sends again after a short wait, or gives up with `reply` once the budget is spent. */
  #later (reply: Buffer): void {
    if (++this.#retries > MAX_RETRIES) {
      this.done(reply)
      return
    }
    this.dispatcher.retries++
    this.onRedirect()
    setTimeout(() => { this.go() }, RETRY_DELAY_MS).unref()
  }

  onReply (_slot: ReplySlot, frame: Buffer): void {
    if (frame[0] === MINUS) {
      const redirect = /^-(MOVED|ASK) (\d+) (\S*):(\d+)\r\n/.exec(frame.toString('latin1', 0, Math.min(frame.length, 300)))
      if (redirect !== null && ++this.#redirects > MAX_REDIRECTS) {
        // A redirect loop (a cluster being resharded in circles): the client gets an error, never the redirect.
        this.done(errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command; last: ${redirect[0].trim().slice(1)}`))
        return
      }
      if (redirect !== null) {
        const topology = this.dispatcher.topology
        const node = topology.node(redirect[3] === '' ? (topology.nodeFor(Number(redirect[2]))?.host ?? '127.0.0.1') : redirect[3], Number(redirect[4]))
        this.dispatcher.redirects++
        this.onRedirect()
        if (redirect[1] === 'MOVED') topology.moved(Number(redirect[2]), node)
        else this.#asking = node
        // Nodes that still disagree about a slot just moved redirect to each other for a moment: back off.
        if (this.#redirects <= 2) this.go()
        else setTimeout(() => { this.go() }, Math.min(200, 20 * this.#redirects)).unref()
        return
      }
      if (startsWith(frame, '-TRYAGAIN') || startsWith(frame, '-LOADING') || startsWith(frame, '-CLUSTERDOWN')) {
        if (startsWith(frame, '-CLUSTERDOWN')) void this.dispatcher.topology.refresh('CLUSTERDOWN')
        this.#later(frame)
        return
      }
    }
    this.done(frame)
  }

  onReplyPart (slot: ReplySlot, piece: Buffer, done: boolean): void {
    ;(this.#pieces ??= []).push(piece)
    if (!done) return
    const whole = Buffer.concat(this.#pieces)
    this.#pieces = null
    this.onReply(slot, whole)
  }

  onFailure (_slot: ReplySlot, err: ProxyError): void {
    // Written and then the connection failed: the command may have run, so it is not sent again.
    void this.dispatcher.topology.refresh('connection failed')
    this.done(toRespError(err))
  }
}

function startsWith (frame: Buffer, prefix: string): boolean {
  return frame.length >= prefix.length && frame.toString('latin1', 0, prefix.length) === prefix
}

/** CLUSTER … as a Redis without cluster support answers, but KEYSLOT, computed here. */
function clusterCommand (cmd: RespCommand): Buffer {
  if (cmd.argc >= 2 && cmd.keyword(1) === 'keyslot') {
    if (cmd.argc !== 3) return errorReply('ERR wrong number of arguments for \'cluster|keyslot\' command')
    return integer(keySlot(cmd.arg(2)))
  }
  return CLUSTER_DISABLED
}

/**
 * The reply one Redis would give, from the parts' replies. `positions` holds each part's key
 * argument indexes (1-based) so MGET's values go back in the order the keys were asked.
 */
function mergeReplies (merge: Merge, positions: number[][], replies: Buffer[], argCount: number): Buffer {
  const failed = replies.find((r) => r[0] === MINUS || r[0] === 0x21 /* ! */)
  if (failed !== undefined) return failed
  if (merge === 'mset') return replies.find((r) => !r.equals(OK)) ?? OK
  if (merge === 'sum') {
    let sum = 0
    for (const reply of replies) sum += Number(reply.toString('latin1', 1, reply.indexOf(13)))
    return integer(sum)
  }
  const values = new Array<Buffer>(argCount)
  replies.forEach((reply, n) => {
    const elements = splitElements(reply)
    positions[n].forEach((p, k) => { values[p - 1] = elements[k] })
  })
  return Buffer.concat([Buffer.from(`*${argCount}\r\n`), ...values])
}

/** The elements of an array reply of bulk strings and nulls (what MGET answers). */
function splitElements (reply: Buffer): Buffer[] {
  let at = reply.indexOf(13) + 2
  const count = Number(reply.toString('latin1', 1, at - 2))
  const out: Buffer[] = []
  for (let i = 0; i < count; i++) {
    const lineEnd = reply.indexOf(13, at)
    const type = reply[at]
    const length = type === 0x24 /* $ */ ? Number(reply.toString('latin1', at + 1, lineEnd)) : -1
    const end = length >= 0 ? lineEnd + 2 + length + 2 : lineEnd + 2
    out.push(reply.subarray(at, end))
    at = end
  }
  return out
}
