import { test } from 'node:test'
import assert from 'node:assert/strict'
import { sharedWhileRunning } from '../../src/ops/shared-call.js'

test('sharedWhileRunning: callers during a call share it; a call after it ends starts a new one; a failure reaches every sharer', async () => {
  let calls = 0
  const pending: { finish?: (value: number) => void, fail?: (err: Error) => void } = {}
  const shared = sharedWhileRunning(async () => {
    calls++
    return await new Promise<number>((resolve, reject) => { pending.finish = resolve; pending.fail = reject })
  })
  const during = [shared(), shared(), shared()]
  assert.equal(calls, 1)
  pending.finish?.(7)
  assert.deepEqual(await Promise.all(during), [7, 7, 7])
  const after = shared()
  assert.equal(calls, 2)
  const alsoAfter = shared()
  pending.fail?.(new Error('worker 1 did not answer'))
  await assert.rejects(after, /did not answer/)
  await assert.rejects(alsoAfter, /did not answer/)
  const again = shared()
  assert.equal(calls, 3, 'a failure does not stick')
  pending.finish?.(8)
  assert.equal(await again, 8)
})
