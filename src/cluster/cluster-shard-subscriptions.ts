import { R_SUBSCRIBED } from '../client/session-effects.js'
import { toRespError, type ProxyError } from '../errors.js'
import { wrongArity } from '../commands/local-commands.js'
import { notSubscribedReply } from '../client/subscriptions.js'
import type { RespCommand } from '../protocol/resp-command.js'
import { parsePubsubFrame } from '../protocol/pubsub-frames.js'
import { command as encodeCommand, errorReply } from '../protocol/resp-encode.js'
import { confirmation, messageTopic, withHead } from '../pubsub/fanout-frames.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterDispatcher } from './cluster-dispatcher.js'
import type { ClusterPin, ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'
import { keySlot } from './keys.js'

const CROSSSLOT = errorReply('CROSSSLOT Keys in request don\'t hash to the same slot')
/** How often, and how many times, a channel whose slot moved looks for its new owner. */
const FOLLOW_DELAY_MS = 100
const FOLLOW_TRIES = 100

export interface ShardClient {
  readonly resp: number
  /** A message for the client, out of band (after the replies already written). */
  deliver (frame: Buffer): void
}

/** An SSUBSCRIBE sent on a node's connection, waiting for its confirmations. */
interface Sent {
  readonly names: string[]
  left: number
  /** Called once every channel is confirmed (null: a resubscription the client never sees), or with the error. */
  readonly done: ((err: Buffer | null) => void) | null
}

/** The client's connection to one master, carrying its shard channels of that master's slots. */
interface NodeLine {
  readonly node: ClusterNode
  pin: ClusterPin | null
  /** Writes waiting for the pin. */
  queue: Array<(conn: UpstreamConnection) => void>
  /** Channels subscribed (or being subscribed) here. */
  readonly channels: Set<string>
  /** SSUBSCRIBEs in flight, oldest first. */
  sent: Sent[]
  /** SUNSUBSCRIBE confirmations the client asked for (not a slot moving away). */
  readonly leaving: Map<string, number>
}

/**
 * One client's shard channels (SSUBSCRIBE) in cluster mode. A shard channel lives in the slot
 * its name hashes to, on that slot's master: the client gets a pinned connection to each master
 * its channels live on, in subscriber mode, and the messages of those channels (Redis's bytes).
 *
 * As on a cluster node, one SSUBSCRIBE takes channels of one slot (`-CROSSSLOT` otherwise), and
 * the count in each confirmation is the client's number of shard channels. When a slot moves
 * (or its master fails over), the old node ends the subscriptions with an unsolicited
 * `sunsubscribe`: respool keeps it from the client, finds the slot's new owner and subscribes
 * the channel there, so the client stays subscribed (messages published in between are lost,
 * as on any reconnect). SUNSUBSCRIBE is answered at once.
 */
export class ClusterShardSubscriptions {
  readonly #dispatcher: ClusterDispatcher
  readonly #pins: ClusterPins
  readonly #client: ShardClient
  readonly #acquireTimeoutMs: number
  /** The client's channels (latin1 names, in subscription order) and the line each is on. */
  readonly #channels = new Map<string, NodeLine>()
  readonly #lines = new Map<string, NodeLine>()
  #closed = false
  resubscribed = 0

  constructor (dispatcher: ClusterDispatcher, pins: ClusterPins, client: ShardClient, acquireTimeoutMs: number) {
    this.#dispatcher = dispatcher
    this.#pins = pins
    this.#client = client
    this.#acquireTimeoutMs = acquireTimeoutMs
  }

  /** Pinned connections (one per master its channels are on). */
  get pins (): number {
    return this.#lines.size
  }

  /** Shard channels the client is subscribed to. */
  get count (): number {
    return this.#channels.size
  }

  /** SSUBSCRIBE: the confirmations now, or null and `done` is called with them once Redis confirmed. */
  subscribe (cmd: RespCommand, done: (reply: Buffer) => void): Buffer | null {
    if (cmd.argc < 2) return wrongArity('ssubscribe')
    const names = cmd.args().slice(1)
    const slot = keySlot(names[0])
    if (names.some((n) => keySlot(n) !== slot)) return CROSSSLOT
    const resp = this.#client.resp
    const confirmations: Buffer[] = []
    const fresh: string[] = []
    for (const name of names) {
      const key = name.toString('latin1')
      if (!this.#channels.has(key) && !fresh.includes(key)) fresh.push(key)
      confirmations.push(confirmation(resp, 'ssubscribe', key, this.#channels.size + fresh.length))
    }
    const reply = Buffer.concat(confirmations)
    if (fresh.length === 0) return reply
    const node = this.#dispatcher.topology.nodeFor(slot)
    if (node === null) {
      void this.#dispatcher.topology.refresh('slot not served')
      return errorReply('CLUSTERDOWN Hash slot not served')
    }
    const line = this.#line(node)
    for (const key of fresh) {
      this.#channels.set(key, line)
      line.channels.add(key)
    }
    this.#ssubscribe(line, fresh, (err) => {
      if (err === null) {
        done(reply)
        return
      }
      // Refused (or no connection): the client is not subscribed to these channels.
      for (const key of fresh) this.#drop(key)
      done(err)
    })
    return null
  }

  /** SUNSUBSCRIBE: answered at once; Redis's confirmations are read and dropped. */
  unsubscribe (cmd: RespCommand): Buffer {
    const resp = this.#client.resp
    if (cmd.argc === 1 && this.#channels.size === 0) return notSubscribedReply(cmd, resp)
    const names = cmd.argc > 1 ? cmd.args().slice(1).map((n) => n.toString('latin1')) : [...this.#channels.keys()]
    const out: Buffer[] = []
    const byLine = new Map<NodeLine, string[]>()
    for (const key of names) {
      const line = this.#channels.get(key)
      if (line !== undefined) {
        this.#channels.delete(key)
        line.channels.delete(key)
        const list = byLine.get(line) ?? []
        list.push(key)
        byLine.set(line, list)
      }
      out.push(confirmation(resp, 'sunsubscribe', key, this.#channels.size))
    }
    for (const [line, keys] of byLine) {
      for (const key of keys) line.leaving.set(key, (line.leaving.get(key) ?? 0) + 1)
      this.#write(line, (conn) => { conn.sendRaw(encodeCommand(['SUNSUBSCRIBE', ...keys.map((k) => Buffer.from(k, 'latin1'))])) })
    }
    return Buffer.concat(out)
  }

  /** RESET, or the client left: every line goes back (its connection is in subscriber mode: scrubbed). */
  close (): void {
    this.#closed = true
    this.#channels.clear()
    for (const line of this.#lines.values()) this.#release(line)
    this.#lines.clear()
  }

  reset (): void {
    this.close()
    this.#closed = false
  }

  #line (node: ClusterNode): NodeLine {
    let line = this.#lines.get(node.key)
    if (line !== undefined) return line
    line = { node, pin: null, queue: [], channels: new Set(), sent: [], leaving: new Map() }
    this.#lines.set(node.key, line)
    const acquisition = this.#pins.acquire(() => node, this.#acquireTimeoutMs, 'short', R_SUBSCRIBED)
    const current = line
    acquisition.promise.then((pin) => {
      if (this.#lines.get(node.key) !== current) {
        this.#pins.release(pin, 'clean')
        return
      }
      current.pin = pin
      const conn = pin.conn
      syncLaneState(conn, 0, this.#client.resp === 3 ? 3 : 2)
      conn.tunnel = (frame) => { this.#onFrame(current, frame); return true }
      conn.onClose = () => { this.#lost(current) }
      const queue = current.queue
      current.queue = []
      for (const write of queue) write(conn)
      this.#maybeRelease(current)
    }, (err: ProxyError) => {
      if (this.#lines.get(node.key) !== current) return
      this.#lines.delete(node.key)
      const sent = current.sent
      current.sent = []
      current.queue = []
      // The client's SSUBSCRIBE gets the error (its channels are dropped); channels that were
      // following a moved slot try again shortly.
      for (const s of sent) s.done?.(toRespError(err))
      const keys = [...current.channels].filter((k) => this.#channels.get(k) === current)
      if (keys.length > 0) setTimeout(() => { this.#follow(keys, { ...node, key: '' }, null) }, FOLLOW_DELAY_MS).unref()
    })
    return line
  }

  #write (line: NodeLine, write: (conn: UpstreamConnection) => void): void {
    if (line.pin !== null) write(line.pin.conn)
    else line.queue.push(write)
  }

  #ssubscribe (line: NodeLine, keys: string[], done: ((err: Buffer | null) => void) | null): void {
    line.sent.push({ names: keys, left: keys.length, done })
    this.#write(line, (conn) => { conn.sendRaw(encodeCommand(['SSUBSCRIBE', ...keys.map((k) => Buffer.from(k, 'latin1'))])) })
  }

  #onFrame (line: NodeLine, frame: Buffer): void {
    if (frame[0] === 0x2d) { // '-': the oldest SSUBSCRIBE was refused as a whole
      const sent = line.sent.shift()
      if (sent === undefined) return
      const redirect = /^-(MOVED|ASK) (\d+) /.exec(frame.toString('latin1', 0, Math.min(frame.length, 100)))
      if (redirect !== null) {
        // respool's map was stale: the channels belong to another node; they follow it there.
        if (redirect[1] === 'MOVED') void this.#dispatcher.topology.refresh('MOVED')
        for (const key of sent.names) line.channels.delete(key)
        this.#follow(sent.names, line.node, sent.done)
        this.#maybeRelease(line)
        return
      }
      sent.done?.(frame)
      this.#maybeRelease(line)
      return
    }
    const info = parsePubsubFrame(frame, frame[0] === 0x3e ? 3 : 2)
    if (info === null || info.family !== 'shard') return
    if (info.kind === 'message') {
      const key = messageTopic(frame)
      if (this.#channels.get(key) !== line) return // left, or moved to another line
      const head = this.#client.resp === 3 ? 0x3e : 0x2a
      this.#client.deliver(frame[0] === head ? frame : withHead(frame, head))
      return
    }
    if (info.kind === 'subscribe') {
      const sent = line.sent[0]
      if (sent !== undefined && --sent.left === 0) {
        line.sent.shift()
        sent.done?.(null)
      }
      return
    }
    const key = info.name
    if (key === null) return
    const asked = line.leaving.get(key) ?? 0
    if (asked > 0) {
      if (asked === 1) line.leaving.delete(key)
      else line.leaving.set(key, asked - 1)
      this.#maybeRelease(line)
      return
    }
    // Nobody asked: the slot left this node. The client stays subscribed; the channel follows its slot.
    if (this.#channels.get(key) !== line) return
    line.channels.delete(key)
    this.#follow([key], line.node, null)
    this.#maybeRelease(line)
  }

  /**
   * Subscribes `keys` (still the client's) on their slot's master once the map names another
   * node than `from`; the map is fetched again meanwhile.
   */
  #follow (keys: string[], from: ClusterNode, done: ((err: Buffer | null) => void) | null, tries = 0): void {
    if (this.#closed) return
    const topology = this.#dispatcher.topology
    const slot = keySlot(Buffer.from(keys[0], 'latin1'))
    const node = topology.nodeFor(slot)
    if (node === null || (node.key === from.key && tries < FOLLOW_TRIES)) {
      void topology.refresh('shard channel moved')
      setTimeout(() => { this.#follow(keys, from, done, tries + 1) }, FOLLOW_DELAY_MS).unref()
      return
    }
    const mine = keys.filter((k) => this.#channels.has(k))
    if (mine.length === 0) {
      done?.(null)
      return
    }
    const line = this.#line(node)
    for (const key of mine) {
      this.#channels.set(key, line)
      line.channels.add(key)
    }
    this.resubscribed += mine.length
    this.#ssubscribe(line, mine, done)
  }

  #lost (line: NodeLine): void {
    if (this.#lines.get(line.node.key) !== line) return
    this.#lines.delete(line.node.key)
    const pin = line.pin
    line.pin = null
    if (pin !== null) this.#pins.release(pin, 'destroy')
    for (const s of line.sent) s.done?.(errorReply('ERR respool: cluster node connection lost'))
    line.sent = []
    // The node failed: its channels follow their slots to whichever node serves them next.
    const keys = [...line.channels].filter((k) => this.#channels.get(k) === line)
    if (keys.length > 0) {
      void this.#dispatcher.topology.refresh('shard subscriber connection lost')
      setTimeout(() => { this.#follow(keys, line.node, null) }, FOLLOW_DELAY_MS).unref()
    }
  }

  #drop (key: string): void {
    const line = this.#channels.get(key)
    if (line === undefined) return
    this.#channels.delete(key)
    line.channels.delete(key)
    this.#maybeRelease(line)
  }

  /** A line with no channel and nothing on its way goes back to the pins. */
  #maybeRelease (line: NodeLine): void {
    if (line.channels.size > 0 || line.sent.length > 0 || line.leaving.size > 0 || line.pin === null) return
    this.#lines.delete(line.node.key)
    this.#release(line)
  }

  #release (line: NodeLine): void {
    const pin = line.pin
    line.pin = null
    line.queue = []
    if (pin !== null) this.#pins.release(pin, 'scrub')
  }
}
