import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ProxyServer } from '../../src/proxy-server.js'

const DASHBOARD = fileURLToPath(new URL('../../../examples/grafana-respool.json', import.meta.url))

test('examples/grafana-respool.json queries only metrics respool exports', async () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Array<{ targets?: Array<{ expr: string }> }> }
  const used = new Set(dashboard.panels.flatMap((p) => p.targets ?? []).flatMap((t) => t.expr.match(/respool_[a-z_]+/g) ?? []))
  assert.ok(used.size >= 15)
  const server = new ProxyServer({ port: 0 })
  try {
    const text = await server.metrics.registry.metrics()
    const exported = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap(([, name, type]) =>
      type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name]))
    for (const name of used) assert.ok(exported.has(name), `${name} is exported`)
  } finally {
    await server.destroy()
  }
})
