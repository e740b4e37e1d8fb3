import http from 'node:http'
import { once } from 'node:events'

/** What the HTTP endpoints report: one proxy process, or the primary over its workers. */
export interface HttpSource {
  /** Prometheus text and its content type. */
  metrics: () => Promise<{ contentType: string, text: string }>
  readiness: () => { ready: boolean, reason: string } | Promise<{ ready: boolean, reason: string }>
}

/**
 * The operator's HTTP side: /metrics (Prometheus), /healthz (the process is alive) and
 * /readyz (the upstream is reachable and respool is not draining). A drain turns /readyz
 * to 503 first, so the orchestrator stops sending traffic before connections close.
 */
export async function startHttpEndpoints (source: HttpSource, host: string, port: number): Promise<http.Server> {
  const httpServer = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/metrics') {
      source.metrics().then(({ contentType, text }) => {
        res.writeHead(200, { 'content-type': contentType }).end(text)
      }, (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`)
      })
      return
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
      return
    }
    if (path === '/readyz') {
      Promise.resolve(source.readiness()).then(({ ready, reason }) => {
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${reason}\n`)
      }, (err: Error) => {
        res.writeHead(503, { 'content-type': 'text/plain' }).end(`${err.message}\n`)
      })
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n')
  })
  httpServer.listen({ host, port })
  await once(httpServer, 'listening')
  return httpServer
}
