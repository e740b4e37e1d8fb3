import { test } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { ReplyFramer, STREAM_THRESHOLD } from '../../src/protocol/reply-framer.js'
import { RequestFramer, COMMAND_STREAM_THRESHOLD } from '../../src/protocol/request-framer.js'
import { adoptReadBuffer, canAdoptReadBuffer, readOption } from '../../src/protocol/socket-reader.js'

/**
 * Transient mode: chunks come from one buffer that is overwritten after every push, as when a
 * socket reads into a reused buffer. Whatever the framers hand on or keep must not change when
 * the buffer is overwritten.
 */

/** Feeds `input` in pieces of `size` through one reused buffer, scribbled over after each push. */
function feedReused (input: Buffer, size: number, push: (chunk: Buffer) => void): void {
  const reused = Buffer.alloc(size)
  for (let at = 0; at < input.length; at += size) {
    const n = input.copy(reused, 0, at, Math.min(at + size, input.length))
    push(reused.subarray(0, n))
    reused.fill(0x21) // '!': anything still pointing here now reads garbage
  }
}

test('reply framer, transient: frames, joined frames and streamed pieces survive the reuse of the read buffer', () => {
  const big = Buffer.alloc(STREAM_THRESHOLD + 12345, 'b')
  const frames = [
    '+OK\r\n', ':42\r\n', '$5\r\nhello\r\n', '*2\r\n$3\r\nfoo\r\n$-1\r\n', '$-1\r\n',
    `$${16384}\r\n${'v'.repeat(16384)}\r\n`, // spans reads
    '%1\r\n+a\r\n*1\r\n:2\r\n'
  ].map((s) => Buffer.from(s, 'latin1'))
  const bigFrame = Buffer.concat([Buffer.from(`$${big.length}\r\n`), big, Buffer.from('\r\n')])
  const input = Buffer.concat([...frames, bigFrame, frames[0]])
  for (const size of [1, 7, 1000, 4096, 65536]) {
    if (size === 1 && input.length > 100000) {
      // byte by byte through a megabyte is slow: only the small frames
      const framer = new ReplyFramer({ transient: true })
      const got: Buffer[] = []
      feedReused(Buffer.concat(frames), 1, (chunk) => { framer.push(chunk, (f, transient) => { got.push(transient ? Buffer.from(f) : f) }) })
      assert.deepEqual(got.map((f) => f.toString('latin1')), frames.map((f) => f.toString('latin1')), 'byte by byte')
      continue
    }
    const framer = new ReplyFramer({ transient: true })
    const got: Buffer[] = []
    const pieces: Buffer[] = []
    feedReused(input, size, (chunk) => {
      // A frame marked transient is a view of the read buffer: kept only as a copy, as respool does.
      // So is a transient piece of a streamed reply.
      framer.push(chunk, (f, transient) => { got.push(transient ? Buffer.from(f) : f) }, (piece, done, transient) => {
        pieces.push(transient ? Buffer.from(piece) : piece)
        if (done) got.push(Buffer.concat(pieces.splice(0)))
      })
    })
    assert.equal(got.length, frames.length + 2, `reads of ${size}`)
    assert.ok(got.every((f, i) => f.equals(i < frames.length ? frames[i] : i === frames.length ? bigFrame : frames[0])), `reads of ${size}: a frame changed`)
  }
})

test('request framer, transient: commands, joined commands and streamed pieces survive the reuse of the read buffer', () => {
  const cmd = (...args: string[]): Buffer => Buffer.from(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a, 'latin1')}\r\n${a}\r\n`).join(''), 'latin1')
  const small = [cmd('GET', 'k'), cmd('SET', 'k', 'v'.repeat(16384)), Buffer.from('PING\r\n'), cmd('MSET', 'a', '1', 'b', '2')]
  const bigValue = 'x'.repeat(COMMAND_STREAM_THRESHOLD + 4321)
  const big = cmd('SET', 'big', bigValue)
  const input = Buffer.concat([...small, big, small[0]])
  for (const size of [7, 1000, 65536]) {
    const framer = new RequestFramer()
    framer.transient = true
    const got: Array<{ frame: Buffer, args: string[] }> = []
    const pieces: Buffer[] = []
    let head: Buffer | null = null
    feedReused(input, size, (chunk) => {
      framer.feed(chunk, {
        onCommand: (c) => { got.push({ frame: c.frame, args: c.args().map((a) => a.toString('latin1').slice(0, 8)) }) },
        startCommandStream: (h) => { head = h.frame; return true },
        commandStreamPart: (piece, done, transient) => {
          // A transient piece is a view of the reused chunk: kept only as a copy.
          assert.ok(transient)
          pieces.push(Buffer.from(piece))
          if (done) got.push({ frame: Buffer.concat([head as Buffer, ...pieces.splice(0)]), args: ['(streamed)'] })
        }
      })
    })
    const expected = [...small.slice(0, 2), cmd('PING'), small[3], big, small[0]]
    assert.equal(got.length, expected.length, `reads of ${size}`)
    for (let i = 0; i < expected.length; i++) assert.ok(got[i].frame.equals(expected[i]), `reads of ${size}: command ${i} changed`)
    assert.deepEqual(got[0].args, ['GET', 'k'])
    assert.deepEqual(got[1].args, ['SET', 'k', 'vvvvvvvv'])
  }
})

test('socket reader: a connected socket and an accepted socket read through the shared buffer, and pause, resume and end work', async () => {
  const serverGot: string[] = []
  let adopted = false
  let serverSocket: net.Socket | null = null
  const server = net.createServer((socket) => {
    serverSocket = socket
    adopted = adoptReadBuffer(socket, (from, chunk) => {
      assert.equal(from, socket)
      serverGot.push(chunk.toString())
    })
    if (!adopted) socket.on('data', (chunk: Buffer) => { serverGot.push(chunk.toString()) })
    socket.on('end', () => { serverGot.push('<end>') })
    socket.write('hello')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const clientGot: string[] = []
  const client = net.connect({ port, host: '127.0.0.1', onread: readOption((chunk) => { clientGot.push(chunk.toString()) }) })
  try {
    await once(client, 'connect')
    const until = async (cond: () => boolean): Promise<void> => {
      const deadline = Date.now() + 5000
      while (!cond()) {
        if (Date.now() > deadline) throw new Error('timed out')
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    }
    await until(() => clientGot.join('') === 'hello')
    assert.equal(adopted, canAdoptReadBuffer)
    client.write('one')
    await until(() => serverGot.join('') === 'one')
    ;(serverSocket as unknown as net.Socket).pause()
    client.write('two')
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal(serverGot.join(''), 'one', 'a paused socket reads nothing')
    ;(serverSocket as unknown as net.Socket).resume()
    await until(() => serverGot.join('') === 'onetwo')
    client.end()
    await until(() => serverGot.includes('<end>'))
  } finally {
    client.destroy()
    server.close()
  }
})
