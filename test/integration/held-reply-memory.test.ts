import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import v8 from 'node:v8'
import vm from 'node:vm'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { cmd } from '../helpers/raw-client.js'
import { commandOn } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'

/**
 * A client that stops reading keeps what respool writes to it; the limits that bound that (the
 * reply window, the output limits, --maxmemory-clients) count the bytes written. The memory
 * behind them must stay close to that count: a small reply the client's socket keeps must not
 * keep a large buffer alive with it.
 */

let upstream: RedisServer

before(async () => {
  upstream = await startRedis()
  await commandOn(upstream.port, 'SET', 'mid', 'x'.repeat(4000))
  await commandOn(upstream.port, 'SET', 'small', 'v')
})

after(async () => {
  await upstream?.stop()
})

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

function arrayBufferBytes (): number {
  gc()
  return process.memoryUsage().arrayBuffers
}

test('small replies a non-reading client\'s socket keeps, one per turn, hold memory in proportion to their bytes', { timeout: 60000 }, async (t) => {
  const proxy = await startProxy({ upstream: `redis://127.0.0.1:${upstream.port}` })
  const socket = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  socket.on('error', () => {})
  t.after(async () => { socket.destroy(); await proxy.close() })
  await once(socket, 'connect')
  /** Bytes respool holds for its clients (only this one here). */
  const held = (): number => proxy.sessions().reduce((sum, session) => sum + session.bufferedBytes(), 0)
  socket.pause() // never reads
  // Replies of a few kilobytes, one at a time, until the kernel's buffers are full and respool
  // holds a few bytes for the client (less than the socket's high-water mark: it still reads
  // the client's commands).
  let mids = 0
  while (mids < 5000 && held() === 0) {
    socket.write(cmd('GET', 'mid'))
    mids++
    await sleep(2)
  }
  await waitFor(() => held() > 0, 'respool to hold bytes for the client', 10000)
  await sleep(50)
  const countedBefore = held()
  const memoryBefore = arrayBufferBytes()
  // Then small replies, each answered in a turn of its own (the client sends one at a time).
  const gets = 300
  for (let i = 0; i < gets; i++) {
    socket.write(cmd('GET', 'small'))
    await sleep(2)
  }
  await waitFor(() => held() >= countedBefore + gets * 7, 'the small replies to be held', 10000)
  const counted = held() - countedBefore
  const growth = arrayBufferBytes() - memoryBefore
  t.diagnostic(`${gets} replies, ${counted} bytes held for the client, memory +${growth} bytes`)
  assert.ok(growth < 4 * 1024 * 1024, `${counted} bytes of small replies held for the client keep ${growth} bytes of memory`)

  // Once the client reads, it gets every reply, in order.
  const expected = Buffer.concat([
    ...Array.from({ length: mids }, () => Buffer.from(`$4000\r\n${'x'.repeat(4000)}\r\n`)),
    ...Array.from({ length: gets }, () => Buffer.from('$1\r\nv\r\n'))
  ])
  const chunks: Buffer[] = []
  let got = 0
  socket.on('data', (chunk: Buffer) => { chunks.push(chunk); got += chunk.length })
  socket.resume()
  await waitFor(() => got >= expected.length, 'every reply', 10000)
  assert.ok(Buffer.concat(chunks).equals(expected), 'the replies arrive whole and in order')
})
