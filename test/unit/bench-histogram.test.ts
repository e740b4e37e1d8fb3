import { test } from 'node:test'
import assert from 'node:assert/strict'
import { bucketDelta, bucketQuantile, LatencyHistogram } from '../../src/bench/histogram.js'

test('LatencyHistogram quantiles are within 1% of the exact ones', () => {
  const h = new LatencyHistogram()
  const values: number[] = []
  for (let i = 1; i <= 10000; i++) values.push((i * 7919 % 10000) / 100 + 0.01) // 0.01 … 100 ms
  for (const v of values) h.record(v)
  values.sort((a, b) => a - b)
  for (const q of [0.5, 0.9, 0.99, 0.999]) {
    const exact = values[Math.ceil(q * values.length) - 1]
    const got = h.quantile(q)
    assert.ok(got >= exact && got <= exact * 1.0101, `q=${q}: ${got} vs ${exact}`)
  }
  assert.equal(h.count, 10000)
  assert.equal(h.quantile(1), h.maxMs)
  const copy = new LatencyHistogram(Array.from(h.counts))
  assert.equal(copy.count, 10000)
  assert.equal(new LatencyHistogram().quantile(0.99), 0)
})

test('bucketQuantile interpolates as histogram_quantile does; bucketDelta subtracts snapshots', () => {
  const bounds = [0.001, 0.01, 0.1]
  // 90 observations in (0, 1 ms], 10 in (1, 10 ms], none above.
  assert.equal(bucketQuantile(bounds, [90, 10, 0, 0], 0.5), 0.001 * (50 / 90))
  assert.ok(Math.abs(bucketQuantile(bounds, [90, 10, 0, 0], 0.99) - (0.001 + 0.009 * 0.9)) < 1e-12)
  assert.equal(bucketQuantile(bounds, [0, 0, 0, 5], 0.99), 0.1, 'above the last bound: that bound')
  assert.equal(bucketQuantile(bounds, [0, 0, 0, 0], 0.99), 0)
  assert.deepEqual(bucketDelta([1, 2, 3, 0], [4, 2, 5, 1]), [3, 0, 2, 1])
})
