import { test } from 'node:test'
import assert from 'node:assert/strict'
import { reserveInRing, RING_MIN, type RingLease } from '../../src/protocol/command-ring.js'

/**
 * The command ring gives space back only from its head, and only what was released: a lease
 * still held is never overwritten, however the ring fills and wraps.
 */
test('command ring: released space is reused in order; space still leased is never handed out again', () => {
  const size = 64 * 1024
  const held: Array<{ frame: Buffer, lease: RingLease, fill: number }> = []
  let fill = 0
  let fullSeen = 0
  for (let i = 0; i < 2000; i++) {
    const got = reserveInRing(size + (i % 7) * 1000)
    if (got === null) {
      fullSeen++
      // Full: give back the oldest few, as replies arriving in order would.
      for (const h of held.splice(0, 4)) {
        assert.ok(h.frame.every((b) => b === h.fill), 'a leased frame was overwritten')
        h.lease.release()
      }
      continue
    }
    fill = (fill + 1) % 251
    got.frame.fill(fill)
    held.push({ ...got, fill })
    for (const h of held) assert.equal(h.frame[0], h.fill, 'a leased frame was overwritten')
  }
  assert.ok(fullSeen > 0, 'the ring filled up at some point')
  for (const h of held) assert.ok(h.frame.every((b) => b === h.fill))
})

test('command ring: small and huge commands are not its business', () => {
  assert.equal(reserveInRing(RING_MIN - 1), null)
  assert.equal(reserveInRing(1024 * 1024), null)
})
