import { bulk } from '../protocol/resp-encode.js'
import { commandFamily, type PubsubFamily, type PubsubFrame } from '../protocol/pubsub-frames.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'

/**
 * A client's subscriptions as Redis has confirmed them, in stream order. The proxy needs them
 * to know how many confirmations an argument-less (P|S)UNSUBSCRIBE will produce, and when
 * subscriber mode really ends (no subscription left and no (UN)SUBSCRIBE still on its way).
 */
export class Subscriptions {
  /** Made on the first confirmation: most clients never subscribe (ten thousand idle ones cost nothing here). */
  #sets: Record<PubsubFamily, Set<string>> | null = null
  /** (P|S)(UN)SUBSCRIBE commands written and not yet completed. */
  inFlight = 0

  count (family: PubsubFamily): number {
    return this.#sets?.[family].size ?? 0
  }

  get empty (): boolean {
    const sets = this.#sets
    return sets === null || sets.channel.size + sets.pattern.size + sets.shard.size === 0
  }

  /** Subscriber mode may end: nothing subscribed, nothing pending. */
  get settled (): boolean {
    return this.empty && this.inFlight === 0
  }

  clear (): void {
    this.#sets = null
    this.inFlight = 0
  }

  /**
   * Records a confirmation. If `head` (the command waiting for the next reply) is the
   * (UN)SUBSCRIBE this confirmation belongs to, collects the frame into it and returns the
   * whole reply once its last confirmation arrived; returns null when the frame is not part
   * of the head's reply (it is then out of band) or the reply is not complete yet ('pending').
   */
  confirm (info: PubsubFrame, frame: Buffer, head: ReplySlot | undefined, owner: unknown): Buffer | 'pending' | null {
    const set = (this.#sets ??= { channel: new Set(), pattern: new Set(), shard: new Set() })[info.family]
    const sizeBefore = set.size
    if (info.name !== null) {
      if (info.kind === 'subscribe') set.add(info.name)
      else set.delete(info.name)
    }
    const cmd = head?.command
    if (head === undefined || head.sink !== owner || head.confirmations === 0 || cmd == null ||
      !cmd.name.endsWith(info.kind) || commandFamily(cmd.name) !== info.family) return null
    // An argument-less UNSUBSCRIBE confirms each subscription it ends (or once if there is none).
    if (head.confirmations === -1) head.confirmations = Math.max(1, sizeBefore)
    ;(head.parts ??= []).push(frame)
    if (--head.confirmations > 0) return 'pending'
    const reply = head.parts.length === 1 ? head.parts[0] : Buffer.concat(head.parts)
    head.parts = null
    return reply
  }
}

/** What Redis answers to (P|S)UNSUBSCRIBE from a client that is not subscribed. */
export function notSubscribedReply (cmd: RespCommand, resp: number): Buffer {
  const head = resp === 3 ? '>3\r\n' : '*3\r\n'
  const kind = `$${cmd.name.length}\r\n${cmd.name}\r\n`
  const names = cmd.argc > 1 ? cmd.args().slice(1) : [null]
  return Buffer.concat(names.map((name) => Buffer.concat([
    Buffer.from(head + kind),
    name === null ? Buffer.from(resp === 3 ? '_\r\n' : '$-1\r\n') : bulk(name),
    Buffer.from(':0\r\n')
  ])))
}
