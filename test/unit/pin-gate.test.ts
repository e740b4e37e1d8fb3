import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { PinGate } from '../../src/routing/pin-gate.js'
import { PoolTimeoutError } from '../../src/errors.js'

const tick = async (): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, 5)) }

// The gate's deadline timers are unref'd (a stopping proxy never waits on them); keep the
// test process alive while they run.
const keepAlive = setInterval(() => {}, 1000)
after(() => { clearInterval(keepAlive) })

test('blocking commands may hold all pins but one; short pins get the last one', async () => {
  const gate = new PinGate(3)
  const b1 = await gate.request(null, 'blocking').promise
  const b2 = await gate.request(null, 'blocking').promise
  let third: unknown = null
  const b3 = gate.request(null, 'blocking')
  void b3.promise.then((p) => { third = p }, () => {})
  await tick()
  assert.equal(third, null, 'a third blocking pin waits')
  const s1 = await gate.request(100, 'short').promise // served at once
  assert.equal(gate.held, 3)
  gate.release(b1)
  await tick()
  assert.notEqual(third, null, 'the waiting blocking request got the released pin')
  gate.release(s1)
  gate.release(b2)
  gate.release(third as never)
  assert.equal(gate.held, 0)
  await gate.close()
})

test('requests are served in arrival order and give up at their deadline', async () => {
  const gate = new PinGate(1)
  const holder = await gate.request(null).promise
  const order: string[] = []
  const late = gate.request(30)
  const first = gate.request(null)
  const second = gate.request(null)
  void first.promise.then(() => order.push('first'))
  void second.promise.then(() => order.push('second'))
  await assert.rejects(late.promise, (err: unknown) => err instanceof PoolTimeoutError && /waited 30 ms/.test(err.message))
  assert.equal(gate.waiting, 2)
  gate.release(holder)
  const got = await first.promise
  assert.deepEqual(order, ['first'])
  gate.release(got)
  gate.release(await second.promise)
  assert.deepEqual(order, ['first', 'second'])
  await gate.close()
})

test('a cancelled request never holds a permit', async () => {
  const gate = new PinGate(1)
  const holder = await gate.request(null).promise
  const waiting = gate.request(null, 'blocking')
  waiting.cancel(new PoolTimeoutError('client left'))
  await assert.rejects(waiting.promise, /client left/)
  gate.release(holder)
  await tick()
  assert.equal(gate.held, 0)
  const next = await gate.request(50).promise
  assert.equal(gate.held, 1)
  gate.release(next)
  await gate.close()
})
