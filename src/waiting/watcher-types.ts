/**
 * The parking lot's records: the waiters parked on one key (KeyQueue), one watcher per
 * database, kind of key and group (Watcher), and its connections, one per end it takes from
 * (Arm). ParkingLot (parking-lot.ts) keeps the waiters in them; WatcherArms (watcher-arms.ts)
 * runs the arms' waits.
 */
import type Denque from 'denque'
import type { End, Family } from './parkable.js'
import type { ParkingPin as Pin, ParkingPinAcquisition as PinAcquisition } from './parking-upstream.js'
import type { Waiter } from './parking-lot.js'

/** What a watcher took to learn that a key has data (a sorted set's member comes with its score). */
export interface Taken {
  key: Buffer
  element: Buffer
  score: Buffer | null
}

/** The waiters parked on one key, longest-waiting first (finished ones are dropped lazily). */
export interface KeyQueue {
  readonly key: string
  /** The key as a RESP bulk string, for the watcher's command. */
  readonly arg: Buffer
  readonly waiters: Denque<Waiter>
  /** Waiters in the queue that are parked (not being served, not finished). */
  parked: number
  /** Waiters in the queue that are not finished. */
  live: number
}

/**
 * One watcher connection. Lists have two: a key is watched from the end its longest-waiting
 * waiter takes from (BLPOP or BRPOP), and what the watcher took goes back to that same end. A
 * push to the other end meanwhile (the usual queue: LPUSH, then BRPOP) then changes nothing, and
 * one to the same end is ahead of it only until the waiter takes it, as the waiter would have
 * taken it first on a direct connection.
 */
export interface Arm {
  readonly watcher: Watcher
  /** The end this arm takes from: 'left'/'right' for lists, 'min' for sorted sets, '' for streams. */
  readonly end: End
  pin: Pin | null
  acquiring: PinAcquisition | null
  /** Sweeps its keys while it has no connection (see WatcherArms#poll). */
  pollTimer: NodeJS.Timeout | null
  /** The poll's sweep, built once for a set of keys (rebuilding it is a copy of every key). */
  sweepCache: { frame: Buffer, keys: number, version: number, left: number } | null
  /** Between asking for the watcher's pin and learning its connection's id. */
  starting: boolean
  /** Redis's id of the watcher connection (for CLIENT UNBLOCK). */
  redisId: string | null
  /** What its blocking command waits on now (null: not waiting). */
  waitingOn: string | null
  unblockSent: boolean
}

/** The waiters of one database and kind of key, and the connections watching their keys. */
export interface Watcher {
  readonly db: number
  readonly family: Family
  readonly group: number
  readonly queues: Map<string, KeyQueue>
  /** Keys that hold another kind of value: Redis would not wake their waiters; left out. */
  readonly wrongType: Set<string>
  readonly arms: Arm[]
  scheduled: boolean
  /** A sweep is on its way (one at a time: each finds what arrived before it). */
  sweeping: boolean
  /**
   * Wake-up transactions on their way. Meanwhile no arm starts a new wait: a watcher that took
   * an element from a key those transactions serve would hand it to a later waiter.
   */
  serving: number
  /**
   * Until then, the arms sweep their keys every HOT_POLL_MS instead of blocking on them. Data
   * arrived a moment ago, so more is likely; a sweep costs Redis a few ns per key, a new
   * blocking wait on every key hundreds of times that (and a wait ends at each wake-up).
   */
  hotUntil: number
  /** Bumped when a key joins the set to watch (a poll's cached sweep is then out of date). */
  keysVersion: number
  /** Keys that left the set to watch since (a cached sweep still asks about them). */
  keysLeft: number
  /** Tracked keys found with data (and how much), to be served once no wake-up is on its way. */
  found: Map<string, number>
  /** When the oldest of `found` was learned of. */
  foundAt: number
  /** Tracked keys whose waiters a wake-up is serving now. */
  servingKeys: Set<string>
  /** Keys with a parked waiter. */
  wantedKeys: number
  /** Its keys are watched by the tracker (see TRACK_MIN_KEYS). */
  tracked: boolean
}

/** The ends a kind of key is watched from (one watcher connection each, when in use). */
export const ARM_ENDS: Record<Family, End[]> = { list: ['left', 'right'], zset: ['min'], stream: [''] }

/** The end the longest-parked waiter on a key takes from. */
export function headEnd (queue: KeyQueue): End | null {
  for (let i = 0; i < queue.waiters.length; i++) {
    const waiter = queue.waiters.peekAt(i) as Waiter
    if (waiter.state === 'parked') return waiter.end
  }
  return null
}
