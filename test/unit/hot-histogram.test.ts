import { test } from 'node:test'
import assert from 'node:assert/strict'
import client from 'prom-client'
import { HotHistogram } from '../../src/ops/hot-histogram.js'

const buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

test('HotHistogram renders exactly what prom-client\'s Histogram renders for the same observations', async () => {
  const values = [0, 0.00005, 0.0001, 0.0003, 0.001, 0.00999, 0.7, 3, 10, 11, 1e6, 0.0001000001]
  for (let i = 0; i < 300; i++) values.push((i * 7919 % 1000) / 37000)
  for (const openMetrics of [false, true]) {
    const registry = (): client.Registry => {
      if (!openMetrics) return new client.Registry()
      const r = new client.Registry<client.OpenMetricsContentType>()
      r.setContentType(client.Registry.OPENMETRICS_CONTENT_TYPE)
      return r as unknown as client.Registry
    }
    const ours = registry()
    const theirs = registry()
    const hot = new HotHistogram({ name: 'x_seconds', help: 'Some latency', buckets, registers: [ours] })
    const reference = new client.Histogram({ name: 'x_seconds', help: 'Some latency', buckets, registers: [theirs] })
    const fresh = await ours.metrics()
    assert.equal(fresh, await theirs.metrics(), 'before any observation')
    for (const v of values) { hot.observe(v); reference.observe(v) }
    const text = await ours.metrics()
    assert.match(text, /^x_seconds_count 312$/m)
    assert.equal(text, await theirs.metrics())
    // After a reset prom-client drops the label-less series until the next observation; this
    // one shows zeros again, as a fresh histogram does (and as a scraper expects).
    ours.resetMetrics()
    assert.equal(await ours.metrics(), fresh, 'after a reset')
  }
})

test('HotHistogram ignores values that are not finite numbers instead of corrupting its sum', async () => {
  const registry = new client.Registry()
  const hot = new HotHistogram({ name: 'y_seconds', help: 'h', buckets: [1], registers: [registry] })
  hot.observe(Number.NaN)
  hot.observe(Number.POSITIVE_INFINITY)
  hot.observe(0.5)
  const text = await registry.metrics()
  assert.match(text, /^y_seconds_count 1$/m)
  assert.match(text, /^y_seconds_sum 0\.5$/m)
})
