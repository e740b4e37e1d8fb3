/**
 * Who subscribes to what in the pub/sub fan-out benchmark, and which messages each subscriber
 * must get. Shared by the parent (lib/fanout.ts) and the subscriber workers
 * (workers/fanout-subscribers.ts); no other imports, so a worker loads nothing else.
 *
 * - C channels `<prefix><c>`, c zero-padded to at least two digits (C a multiple of 10);
 * - C/10 patterns `<prefix><p>?`, pattern p matching the ten channels 10p … 10p+9;
 * - subscriber i PSUBSCRIBEs a pattern when i % every === every − 1 (every = 1/share), the others
 *   SUBSCRIBE one channel; both go round-robin over their channels or patterns;
 * - message g (g = 0, 1, 2, … in the order published) goes to channel g % C, and its payload is
 *   `<g>:<send time in µs>`.
 */

export interface FanoutPlan {
  /** Subscribers in all. */
  subscribers: number
  channels: number
  /** Every `patternEvery`-th subscriber uses a pattern (0: none). */
  patternEvery: number
  prefix: string
}

export const PATTERN_WIDTH = 10

export function digits (plan: FanoutPlan): number {
  return Math.max(2, String(plan.channels - 1).length)
}

export function channelName (plan: FanoutPlan, c: number): string {
  return `${plan.prefix}${String(c).padStart(digits(plan), '0')}`
}

export function patternCount (plan: FanoutPlan): number {
  return plan.channels / PATTERN_WIDTH
}

export function patternName (plan: FanoutPlan, p: number): string {
  return `${plan.prefix}${String(p).padStart(digits(plan) - 1, '0')}?`
}

/** What subscriber i subscribes: a channel index or a pattern index. */
export function subscriptionOf (plan: FanoutPlan, i: number): { pattern: boolean, index: number } {
  const every = plan.patternEvery
  if (every > 0 && i % every === every - 1) return { pattern: true, index: Math.floor(i / every) % patternCount(plan) }
  // The number of channel subscribers before i.
  const k = every > 0 ? i - Math.floor((i + 1) / every) : i
  return { pattern: false, index: k % plan.channels }
}

/** Channel of message g. */
export function channelOfMessage (plan: FanoutPlan, g: number): number {
  return g % plan.channels
}

/** Whether channel c is one the subscription gets. */
export function covers (sub: { pattern: boolean, index: number }, c: number): boolean {
  return sub.pattern ? Math.floor(c / PATTERN_WIDTH) === sub.index : c === sub.index
}

/** Messages (of `total` published, 0 … total−1) a subscription must get. */
export function expectedMessages (plan: FanoutPlan, sub: { pattern: boolean, index: number }, total: number): number {
  const onChannel = (c: number): number => c >= total ? 0 : Math.floor((total - 1 - c) / plan.channels) + 1
  if (!sub.pattern) return onChannel(sub.index)
  let n = 0
  for (let c = sub.index * PATTERN_WIDTH; c < (sub.index + 1) * PATTERN_WIDTH; c++) n += onChannel(c)
  return n
}
