import { parsePubsubFrame } from '../protocol/pubsub-frames.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'
import { ReplyFramer } from '../protocol/reply-framer.js'
import { ShuttingDownError, toRespError, type ProxyError } from '../errors.js'
import { globMatch } from './glob.js'
import { confirmation, messageTopic, withHead } from './fanout-frames.js'
import type { Router, Pin, PinAcquisition } from '../routing/router.js'

/** Where the shared connection comes from: respool's router, or the pins of cluster mode. */
export type HubPins = Pick<Router, 'acquirePin' | 'releasePin'>
import type { Logger } from '../ops/logger.js'

/**
 * Channel and pattern subscriptions of every client, carried by one shared subscriber
 * connection instead of a connection each.
 *
 *   client SUBSCRIBE a b ──► hub: a and b get one more subscriber each
 *                              │ a channel nobody had yet: SUBSCRIBE it on the shared connection
 *                              └ once Redis confirmed every channel of the command, the client is
 *                                subscribed (from that moment on it gets their messages) and gets
 *                                its confirmations, with its own subscription count
 *   shared connection: message a … ──► every client subscribed to a, in its own protocol
 *   client UNSUBSCRIBE a ──► answered at once; the last subscriber of a gone: UNSUBSCRIBE a upstream
 *
 * A message frame is the same for RESP2 and RESP3 but for its first byte (`*` or `>`): every
 * element is a bulk string. So the frame Redis sent is passed on as is, or copied once with
 * the other first byte, never decoded and encoded again. The shared connection speaks whichever
 * protocol the pool handed it over in (frames of either kind are recognised).
 *
 * The connection is a pin (it counts against --pool-size and the pin cap), taken when the first
 * subscription arrives and given back (after a RESET) when the last one ends. If it dies, a new
 * one is taken at once and the union of every client's subscriptions is subscribed again; the
 * clients stay subscribed (messages published meanwhile are lost, as on any reconnect).
 */

export type HubFamily = 'channel' | 'pattern'

/** What the hub needs from a subscribed client. */
export interface HubClient {
  /** The client's protocol now (a RESP3 client may switch with HELLO while subscribed). */
  readonly resp: number
  /** An out-of-band frame for the client (a message). */
  deliver (frame: Buffer): void
}

/** One client's channels and patterns, in the order it subscribed them. */
export class HubMember {
  readonly channels = new Set<string>()
  readonly patterns = new Set<string>()
  /** SUBSCRIBE/PSUBSCRIBE commands waiting for the shared connection's confirmations. */
  readonly requests = new Set<Request>()

  constructor (readonly client: HubClient) {}

  /** What Redis puts in a channel or pattern confirmation: channels plus patterns. */
  get count (): number {
    return this.channels.size + this.patterns.size
  }

  setOf (family: HubFamily): Set<string> {
    return family === 'channel' ? this.channels : this.patterns
  }
}

/** One channel or pattern that at least one client subscribes (or did until recently). */
interface Topic {
  readonly family: HubFamily
  /** The name as latin1 text (one character per byte). */
  readonly key: string
  readonly members: Set<HubMember>
  /** Requests waiting for this topic to be subscribed upstream. */
  readonly requests: Set<Request>
  /** The latest confirmation Redis sent for it on the shared connection was a subscribe. */
  upstream: boolean
  /** The latest command sent for it was a subscribe. */
  wanted: boolean
  /** Commands sent for it whose confirmation has not arrived. */
  pending: number
  /** Commands sent for it that were confirmed or refused since it was made. */
  answered: number
}

interface Request {
  readonly member: HubMember
  readonly family: HubFamily
  /** The command's arguments, in order (repeats included: each gets its confirmation). */
  readonly names: string[]
  readonly topics: Topic[]
  /** Topics not yet subscribed upstream. */
  remaining: number
  readonly done: (reply: Buffer) => void
}

/** An UNSUBSCRIBE's reply, held until Redis confirmed the topics it left upstream. */
interface Leaving {
  /** Each topic, and its `answered` count once the commands sent for it by then are answered. */
  readonly topics: Map<Topic, number>
  readonly reply: Buffer
  readonly done: (reply: Buffer) => void
}

/** A command written on the shared connection, waiting for its confirmations. */
interface Sent {
  readonly subscribe: boolean
  readonly topics: Topic[]
  left: number
}

export interface HubOptions {
  acquireTimeoutMs: number
  /** Counts the shared connection's pin (stats by reason). */
  onPin?: () => void
}

export interface HubStats {
  subscribers: number
  channels: number
  patterns: number
  connections: number
  reconnects: number
}

const RETRY_MS = 250

export class PubsubHub {
  readonly #router: HubPins
  readonly #log: Logger
  readonly #options: HubOptions
  readonly #topics: Record<HubFamily, Map<string, Topic>> = { channel: new Map(), pattern: new Map() }
  readonly #members = new Set<HubMember>()
  #pin: Pin | null = null
  #acquiring: PinAcquisition | null = null
  #sent: Sent[] = []
  readonly #leaving = new Set<Leaving>()
  #retry: NodeJS.Timeout | null = null
  #closed = false
  reconnects = 0

  constructor (router: HubPins, log: Logger, options: HubOptions) {
    this.#router = router
    this.#log = log
    this.#options = options
  }

  get stats (): HubStats {
    let subscribers = 0
    for (const m of this.#members) if (m.count > 0) subscribers++
    return { subscribers, channels: this.#topics.channel.size, patterns: this.#topics.pattern.size, connections: this.#pin !== null ? 1 : 0, reconnects: this.reconnects }
  }

  member (client: HubClient): HubMember {
    return new HubMember(client)
  }

  /**
   * SUBSCRIBE or PSUBSCRIBE for `member`. Returns the reply at once when every topic is already
   * subscribed upstream; otherwise null, and `done` gets the reply once Redis confirmed them (or
   * an error if the shared connection cannot be had). Until then the member gets nothing new.
   */
  subscribe (member: HubMember, family: HubFamily, names: Buffer[], done: (reply: Buffer) => void): Buffer | null {
    const keys = names.map((n) => n.toString('latin1'))
    const map = this.#topics[family]
    const topics: Topic[] = []
    for (const key of new Set(keys)) {
      let topic = map.get(key)
      if (topic === undefined) {
        topic = { family, key, members: new Set(), requests: new Set(), upstream: false, wanted: false, pending: 0, answered: 0 }
        map.set(key, topic)
      }
      topics.push(topic)
    }
    const request: Request = { member, family, names: keys, topics, remaining: 0, done }
    for (const topic of topics) if (!this.#ready(topic)) request.remaining++
    if (request.remaining === 0) return this.#complete(request)
    this.#members.add(member)
    member.requests.add(request)
    // Every topic of the request stays wanted while it waits, subscribed already or not.
    for (const topic of topics) topic.requests.add(request)
    this.#sync(topics)
    this.#ensureConnection()
    return null
  }

  /**
   * UNSUBSCRIBE or PUNSUBSCRIBE for `member` (names null: every one of that family). From now on
   * the member gets no message of those topics. Topics nobody is left on are unsubscribed
   * upstream; then the reply waits (null returned, `done` called) until Redis confirmed that.
   * Otherwise a PUBLISH sent after the reply could find Redis already without respool's
   * subscription while respool still counted it there, and answer one receiver too few.
   */
  unsubscribe (member: HubMember, family: HubFamily, names: Buffer[] | null, done: (reply: Buffer) => void): Buffer | null {
    const set = member.setOf(family)
    const keys = names !== null ? names.map((n) => n.toString('latin1')) : [...set]
    const kind = family === 'channel' ? 'unsubscribe' : 'punsubscribe'
    const resp = member.client.resp
    if (keys.length === 0) return confirmation(resp, kind, null, member.count)
    const parts: Buffer[] = []
    const touched: Topic[] = []
    for (const key of keys) {
      if (set.delete(key)) {
        const topic = this.#topics[family].get(key)
        if (topic !== undefined) {
          topic.members.delete(member)
          touched.push(topic)
        }
      }
      parts.push(confirmation(resp, kind, key, member.count))
    }
    this.#sync(touched)
    const reply = parts.length === 1 ? parts[0] : Buffer.concat(parts)
    // Waits for what is on its way now, not for a quiet topic: others may keep (un)subscribing it.
    const unsettled = new Map(touched.filter((topic) => topic.pending > 0).map((topic) => [topic, topic.answered + topic.pending]))
    if (unsettled.size === 0) return reply
    this.#leaving.add({ topics: unsettled, reply, done })
    return null
  }

  /** The member is gone or RESET: every subscription and request of it ends, nothing is answered. */
  leave (member: HubMember): void {
    const touched: Topic[] = []
    for (const request of member.requests) {
      for (const topic of request.topics) {
        topic.requests.delete(request)
        touched.push(topic)
      }
    }
    member.requests.clear()
    for (const family of ['channel', 'pattern'] as const) {
      for (const key of member.setOf(family)) {
        const topic = this.#topics[family].get(key)
        if (topic === undefined) continue
        topic.members.delete(member)
        touched.push(topic)
      }
      member.setOf(family).clear()
    }
    this.#members.delete(member)
    this.#sync(touched)
  }

  /**
   * PUBLISH's reply as if every respool subscriber were its own client: Redis counted the shared
   * connection once for the channel and once per matching pattern; respool's subscribers of
   * them are counted instead.
   */
  adjustPublish (channel: Buffer, reply: Buffer): Buffer {
    if (reply[0] !== 0x3a) return reply // ':'
    let n = Number(reply.toString('latin1', 1, reply.length - 2))
    if (!Number.isSafeInteger(n)) return reply
    const key = channel.toString('latin1')
    const topic = this.#topics.channel.get(key)
    if (topic !== undefined) n += topic.members.size - (topic.upstream ? 1 : 0)
    for (const pattern of this.#topics.pattern.values()) {
      if (pattern.members.size === 0 && !pattern.upstream) continue
      if (globMatch(pattern.key, key)) n += pattern.members.size - (pattern.upstream ? 1 : 0)
    }
    return Buffer.from(`:${Math.max(0, n)}\r\n`)
  }

  /** PUBSUB NUMSUB's reply with the same rule: per channel, respool's subscribers instead of its one connection. */
  adjustNumsub (reply: Buffer): Buffer {
    if (reply[0] !== 0x2a || reply[1] === 0x2d) return reply
    const headerEnd = reply.indexOf(10) + 1
    const elements: Buffer[] = []
    new ReplyFramer().push(reply.subarray(headerEnd), (element) => { elements.push(element) })
    const out: Buffer[] = [reply.subarray(0, headerEnd)]
    for (let i = 0; i + 1 < elements.length; i += 2) {
      const name = elements[i]
      const count = elements[i + 1]
      out.push(name)
      const topic = name[0] === 0x24 ? this.#topics.channel.get(bulkText(name)) : undefined
      if (topic === undefined || count[0] !== 0x3a) {
        out.push(count)
        continue
      }
      const n = Number(count.toString('latin1', 1, count.length - 2)) + topic.members.size - (topic.upstream ? 1 : 0)
      out.push(Buffer.from(`:${Math.max(0, n)}\r\n`))
    }
    return Buffer.concat(out)
  }

  close (): void {
    this.#closed = true
    this.#settled(null)
    if (this.#retry !== null) clearTimeout(this.#retry)
    this.#acquiring?.cancel(new ShuttingDownError('respool is closing'))
    const pin = this.#pin
    this.#pin = null
    if (pin !== null) this.#router.releasePin(pin, 'destroy')
  }

  // ---- bookkeeping ---------------------------------------------------------------------------

  /** Subscribed upstream with nothing on its way that could change that. */
  #ready (topic: Topic): boolean {
    return this.#pin !== null && topic.upstream && topic.pending === 0
  }

  #refs (topic: Topic): number {
    return topic.members.size + topic.requests.size
  }

  /** The member is subscribed to every topic of its request: its confirmations, with its own counts. */
  #complete (request: Request): Buffer {
    const { member, family } = request
    member.requests.delete(request)
    for (const topic of request.topics) {
      topic.requests.delete(request)
      topic.members.add(member)
    }
    this.#members.add(member)
    const set = member.setOf(family)
    const kind = family === 'channel' ? 'subscribe' : 'psubscribe'
    const resp = member.client.resp
    const parts = request.names.map((key) => {
      set.add(key)
      return confirmation(resp, kind, key, member.count)
    })
    return parts.length === 1 ? parts[0] : Buffer.concat(parts)
  }

  /**
   * Makes the shared connection's subscriptions follow who wants what: a topic with someone on
   * it is subscribed, one with nobody is unsubscribed (one command per family for the lot).
   * A topic nobody wants, with nothing on its way, is forgotten.
   */
  #sync (topics: Iterable<Topic>): void {
    const conn = this.#pin?.conn
    const subscribe: Topic[] = []
    const unsubscribe: Topic[] = []
    for (const topic of new Set(topics)) {
      const wanted = this.#refs(topic) > 0
      if (conn !== undefined && wanted !== topic.wanted) {
        topic.wanted = wanted
        topic.pending++
        ;(wanted ? subscribe : unsubscribe).push(topic)
      } else if (conn === undefined) {
        topic.wanted = wanted
      }
      if (!wanted && topic.pending === 0 && !topic.upstream) this.#topics[topic.family].delete(topic.key)
    }
    this.#send(true, subscribe)
    this.#send(false, unsubscribe)
    this.#maybeRelease()
  }

  #send (subscribe: boolean, topics: Topic[]): void {
    const conn = this.#pin?.conn
    if (conn === undefined || topics.length === 0) return
    for (const family of ['channel', 'pattern'] as const) {
      const mine = topics.filter((t) => t.family === family)
      if (mine.length === 0) continue
      const name = (family === 'channel' ? '' : 'P') + (subscribe ? 'SUBSCRIBE' : 'UNSUBSCRIBE')
      this.#sent.push({ subscribe, topics: mine, left: mine.length })
      conn.sendRaw(encodeCommand([name, ...mine.map((t) => Buffer.from(t.key, 'latin1'))]))
    }
  }

  /** Every frame of the shared connection: messages fan out, confirmations settle topics. */
  #onFrame = (frame: Buffer): boolean => {
    if (frame[0] === 0x2d) { // '-': the oldest command was refused as a whole (ACL …)
      this.#refused(frame)
      return true
    }
    // The connection speaks whichever protocol it was left in (a lane may have switched to RESP3).
    const info = parsePubsubFrame(frame, frame[0] === 0x3e ? 3 : 2)
    if (info === null || info.family === 'shard') return true
    if (info.kind === 'message') {
      const topic = this.#topics[info.family].get(messageTopic(frame))
      if (topic === undefined || topic.members.size === 0) return true
      let other: Buffer | null = null
      for (const member of topic.members) {
        const head = member.client.resp === 3 ? 0x3e : 0x2a
        member.client.deliver(frame[0] === head ? frame : (other ??= withHead(frame, head)))
      }
      return true
    }
    const sent = this.#sent[0]
    if (sent !== undefined && --sent.left === 0) this.#sent.shift()
    const topic = info.name !== null ? this.#topics[info.family].get(info.name) : undefined
    if (topic === undefined) return true
    topic.pending = Math.max(0, topic.pending - 1)
    topic.answered++
    topic.upstream = info.kind === 'subscribe'
    this.#settled(topic)
    if (this.#ready(topic)) {
      for (const request of [...topic.requests]) {
        if (--request.remaining > 0) continue
        request.done(this.#complete(request))
      }
    }
    this.#sync([topic])
    return true
  }

  #refused (frame: Buffer): void {
    const sent = this.#sent.shift()
    if (sent === undefined) return
    const failed = new Set<Request>()
    for (const topic of sent.topics) {
      topic.pending = Math.max(0, topic.pending - 1)
      topic.answered++
      this.#settled(topic)
      if (sent.subscribe) {
        topic.wanted = false
        for (const request of topic.requests) failed.add(request)
      }
    }
    this.#fail(failed, frame)
    this.#sync(sent.topics)
  }

  /** These requests end with `reply` (an error); their topics may be left with nobody. */
  #fail (requests: Iterable<Request>, reply: Buffer): void {
    const touched: Topic[] = []
    for (const request of [...requests]) {
      request.member.requests.delete(request)
      for (const topic of request.topics) {
        topic.requests.delete(request)
        touched.push(topic)
      }
      request.done(reply)
    }
    this.#sync(touched)
  }

  // ---- the shared connection -------------------------------------------------------------------

  #wanted (): boolean {
    for (const map of Object.values(this.#topics)) for (const topic of map.values()) if (this.#refs(topic) > 0) return true
    return false
  }

  #ensureConnection (): void {
    if (this.#closed || this.#pin !== null || this.#acquiring !== null || this.#retry !== null || !this.#wanted()) return
    const acquisition = this.#router.acquirePin(this.#options.acquireTimeoutMs, 'short')
    this.#acquiring = acquisition
    acquisition.promise.then((pin) => {
      this.#acquiring = null
      if (this.#closed) {
        this.#router.releasePin(pin, 'clean')
        return
      }
      this.#options.onPin?.()
      this.#pin = pin
      pin.conn.tunnel = this.#onFrame
      pin.conn.onClose = (_conn, err) => { this.#onLost(err) }
      // Everything anybody wants, subscribed again (or for the first time).
      const all: Topic[] = []
      for (const map of Object.values(this.#topics)) {
        for (const topic of map.values()) {
          topic.wanted = false
          all.push(topic)
        }
      }
      this.#sync(all)
    }, (err: ProxyError) => {
      this.#acquiring = null
      if (this.#closed) return
      this.#log.warn({ err: err.message }, 'no connection for shared pub/sub')
      // Commands waiting for their confirmations get the error; subscribed clients stay
      // subscribed and the connection is tried again.
      const waiting = new Set<Request>()
      for (const member of this.#members) for (const request of member.requests) waiting.add(request)
      this.#fail(waiting, toRespError(err))
      if (this.#wanted()) {
        this.#retry = setTimeout(() => {
          this.#retry = null
          this.#ensureConnection()
        }, RETRY_MS)
        this.#retry.unref()
      }
    })
  }

  #onLost (err: ProxyError): void {
    const pin = this.#pin
    if (pin === null) return
    this.#pin = null
    this.#sent = []
    this.#router.releasePin(pin, 'destroy')
    if (this.#closed) return
    this.reconnects++
    this.#log.warn({ err: err.message, upstream: pin.conn.id }, 'shared pub/sub connection lost; subscribing again on a new one')
    const waiting: Request[] = []
    for (const map of Object.values(this.#topics)) {
      for (const topic of [...map.values()]) {
        topic.upstream = false
        topic.pending = 0
        topic.wanted = false
        for (const request of topic.requests) waiting.push(request)
        if (this.#refs(topic) === 0) map.delete(topic.key)
      }
    }
    for (const request of new Set(waiting)) request.remaining = request.topics.length
    // The connection and its subscriptions are gone: what unsubscribing waited for is done.
    this.#settled(null)
    this.#ensureConnection()
  }

  /**
   * A command for `topic` was answered (null: the connection is gone, and with it everything
   * on its way): UNSUBSCRIBE replies that waited for it and nothing else are sent.
   */
  #settled (topic: Topic | null): void {
    for (const leaving of [...this.#leaving]) {
      if (topic === null) leaving.topics.clear()
      else if ((leaving.topics.get(topic) ?? Infinity) <= topic.answered) leaving.topics.delete(topic)
      if (leaving.topics.size > 0) continue
      this.#leaving.delete(leaving)
      leaving.done(leaving.reply)
    }
  }

  /** Nothing subscribed and nothing on its way: the connection goes back to the pool. */
  #maybeRelease (): void {
    const pin = this.#pin
    if (pin === null || this.#sent.length > 0 || this.#topics.channel.size > 0 || this.#topics.pattern.size > 0) return
    this.#pin = null
    this.#router.releasePin(pin, 'scrub')
  }
}

function bulkText (frame: Buffer): string {
  const lineEnd = frame.indexOf(13)
  return frame.toString('latin1', lineEnd + 2, frame.length - 2)
}

