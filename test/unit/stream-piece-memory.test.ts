import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { setImmediate as turn } from 'node:timers/promises'
import { TickWriter } from '../../src/protocol/write-batcher.js'

/**
 * A client slower than Redis keeps the pieces of a large reply in its socket until it reads
 * them; the limits that bound that (the streaming high-water mark, the output limits, the
 * budget for all clients) count the bytes written. The memory behind those bytes must stay
 * close to that count, however small the reads the pieces came from (a Redis across a network
 * delivers a large value in reads of a few kilobytes).
 */
test('TickWriter: pieces a slow reader\'s socket keeps hold memory in proportion to their bytes', async (t) => {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const accepted = once(server, 'connection')
  const sender = net.connect(port, '127.0.0.1')
  await once(sender, 'connect')
  const [receiver] = await accepted as [net.Socket]
  receiver.pause() // the slow client: reads nothing for now
  t.after(() => { sender.destroy(); receiver.destroy(); server.close() })

  // Every buffer handed to the socket whose write is not done yet: what the socket keeps alive.
  const kept = new Map<ArrayBufferLike, number>()
  const write = sender.write.bind(sender) as (data: Buffer, cb: (err?: Error | null) => void) => boolean
  ;(sender as unknown as { write: unknown }).write = (data: Buffer, cb?: (err?: Error | null) => void): boolean => {
    kept.set(data.buffer, (kept.get(data.buffer) ?? 0) + 1)
    return write(data, (err) => {
      const n = (kept.get(data.buffer) as number) - 1
      if (n === 0) kept.delete(data.buffer)
      else kept.set(data.buffer, n)
      cb?.(err)
    })
  }

  const writer = new TickWriter(sender, { onOutputFull: () => {} })
  const read = Buffer.alloc(64 * 1024) // stands for the shared read buffer
  const pieceBytes = 1400 // one TCP segment's worth
  let sent = 0
  const expected: Buffer[] = []
  // Until the socket itself holds 2 MB (the kernel's buffer fills first), within 64 MB in all.
  while (sender.writableLength < 2 * 1024 * 1024 && sent < 64 * 1024 * 1024) {
    read.fill(sent % 251, 0, pieceBytes)
    const piece = read.subarray(0, pieceBytes)
    expected.push(Buffer.alloc(pieceBytes, sent % 251)) // (not from Node's pool, which the copies may share)
    writer.writePiece(piece)
    read.fill(0xee, 0, pieceBytes) // the read buffer is reused at once
    sent += pieceBytes
  }
  await turn() // writes the kernel took are done now
  const counted = writer.pendingBytes
  let held = 0
  for (const buffer of kept.keys()) held += buffer.byteLength
  assert.ok(counted >= 2 * 1024 * 1024, `the socket holds ${counted} bytes`)
  assert.ok(held <= 2 * counted + 64 * 1024,
    `${counted} bytes waiting for the client keep ${held} bytes of memory (${(held / counted).toFixed(1)}x)`)

  // And the client, once it reads, gets every byte as written.
  const total = Buffer.concat(expected)
  const chunks: Buffer[] = []
  let got = 0
  receiver.on('data', (chunk: Buffer) => { chunks.push(chunk); got += chunk.length })
  receiver.resume()
  const deadline = Date.now() + 10_000
  while (got < total.length && Date.now() < deadline) await turn()
  assert.equal(got, total.length)
  assert.ok(Buffer.concat(chunks).equals(total), 'bytes arrive as written')
})
