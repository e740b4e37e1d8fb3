import { test } from 'node:test'
import assert from 'node:assert/strict'
import { validateConfig } from '../../src/config.js'
import { ConfigError } from '../../src/errors.js'
import { checkWorkerShares, shareOf, workerConfig, workerShares } from '../../src/ops/worker-shares.js'

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0)

test('a total splits into parts that add up to it, the remainder one each to the first workers', () => {
  for (let count = 1; count <= 9; count++) {
    for (const total of [0, 1, count - 1, count, count + 1, 17, 1000, 1_000_003]) {
      const parts = Array.from({ length: count }, (_, i) => shareOf(total, i, count))
      assert.equal(sum(parts), total, `${total} over ${count}`)
      assert.ok(Math.max(...parts) - Math.min(...parts) <= 1, `${total} over ${count}: ${parts.join(',')}`)
      for (let i = 1; i < count; i++) assert.ok(parts[i] <= parts[i - 1], 'the first workers take the remainder')
    }
  }
})

test('every bound is split so that the sums are the configured totals', () => {
  const config = validateConfig({ poolSize: 11, minIdle: 5, maxPins: 7, maxClients: 1001, maxMemoryClients: 1_000_001, workers: 3 })
  const shares = workerShares(config, 3, true)
  assert.equal(shares.length, 3)
  assert.deepEqual(shares.map((s) => s.poolSize), [4, 4, 3])
  assert.equal(sum(shares.map((s) => s.minIdle)), 5)
  assert.equal(sum(shares.map((s) => s.maxPins as number)), 7)
  assert.equal(sum(shares.map((s) => s.maxClients)), 1001)
  assert.equal(sum(shares.map((s) => s.maxMemoryClients)), 1_000_001)
  for (const s of shares) {
    assert.ok(s.minIdle <= s.poolSize)
    assert.ok((s.maxPins as number) <= s.poolSize - 1, 'each worker keeps a connection for shared traffic')
  }
})

test('every worker stays valid at the largest pin cap and idle count its share allows', () => {
  for (let count = 2; count <= 8; count++) {
    for (let poolSize = 2 * count; poolSize <= 40; poolSize++) {
      const config = validateConfig({ poolSize, minIdle: poolSize, maxPins: poolSize - count, workers: count })
      for (let i = 0; i < count; i++) {
        const worker = workerConfig({ poolSize, minIdle: poolSize, maxPins: poolSize - count, workers: count }, i, count)
        assert.ok(worker.maxPins <= worker.poolSize - 1 && worker.maxPins >= 1)
      }
      assert.equal(sum(workerShares(config, count, true).map((s) => s.poolSize)), poolSize)
    }
  }
})

test('without --max-pins each worker takes its own default (its share - 1); no budget stays no budget', () => {
  const options = { poolSize: 9, workers: 2, maxMemoryClients: 0 }
  const first = workerConfig(options, 0, 2)
  const second = workerConfig(options, 1, 2)
  assert.deepEqual([first.poolSize, second.poolSize], [5, 4])
  assert.deepEqual([first.maxPins, second.maxPins], [4, 3])
  assert.deepEqual([first.maxMemoryClients, second.maxMemoryClients], [0, 0])
  assert.equal(first.workers, 2)
  // Everything else is as configured.
  assert.equal(first.acquireTimeoutMs, validateConfig(options).acquireTimeoutMs)
})

test('a worker that would get less than a process needs is refused with a clear error', () => {
  assert.throws(() => checkWorkerShares({ poolSize: 5, workers: 3 }),
    (err: Error) => err instanceof ConfigError && /^pool-size: 5 is too small for 3 workers: each worker needs at least 2 upstream connections of its own .*--pool-size 6 at least/.test(err.message))
  assert.throws(() => checkWorkerShares({ poolSize: 8, maxPins: 7, workers: 2 }), /max-pins: with 2 workers it must be from 2 to 6/)
  assert.throws(() => checkWorkerShares({ poolSize: 8, maxPins: 1, workers: 2 }), /max-pins: with 2 workers it must be from 2 to 6/)
  assert.throws(() => checkWorkerShares({ maxClients: 3, workers: 4 }), /max-clients: 3 is too small for 4 workers/)
  assert.throws(() => checkWorkerShares({ maxMemoryClients: 3, workers: 4 }), /maxmemory-clients: 3 bytes cannot be split between 4 workers/)
  assert.throws(() => checkWorkerShares({ workers: 0 }), /workers: must be an integer from 1 to 64, got 0$/)
  assert.throws(() => checkWorkerShares({ workers: 65, poolSize: 200 }), /workers: must be an integer from 1 to 64, got 65$/)
  // One worker: nothing to split, the single-process checks alone.
  assert.equal(checkWorkerShares({ poolSize: 2, workers: 1 }).poolSize, 2)
})
