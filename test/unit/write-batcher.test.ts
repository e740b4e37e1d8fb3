import { test } from 'node:test'
import assert from 'node:assert/strict'
import type net from 'node:net'
import { setImmediate as turn } from 'node:timers/promises'
import { TickWriter } from '../../src/protocol/write-batcher.js'

/** Records what TickWriter hands to the socket; `full` makes write() report a full buffer. */
function recordingSocket (full = false): { socket: net.Socket, writes: string[] } {
  const writes: string[] = []
  const socket = { destroyed: false, writableLength: 0, write: (data: Buffer) => { writes.push(data.toString()); return !full } }
  return { socket: socket as unknown as net.Socket, writes }
}

test('TickWriter: writes of one turn reach the socket as one write, in order, after the turn', async () => {
  const { socket, writes } = recordingSocket()
  const writer = new TickWriter(socket, () => {})
  writer.write(Buffer.from('+a\r\n'))
  writer.write(Buffer.from('+b\r\n'))
  writer.write(Buffer.from('+c\r\n'))
  assert.equal(writer.pendingBytes, 12)
  assert.deepEqual(writes, [])
  await turn()
  assert.deepEqual(writes, ['+a\r\n+b\r\n+c\r\n'])
  assert.equal(writer.pendingBytes, 0)
  // The next turn starts clean: nothing of the last one is written twice.
  writer.write(Buffer.from('+d\r\n'))
  await turn()
  assert.deepEqual(writes, ['+a\r\n+b\r\n+c\r\n', '+d\r\n'])
})

test('TickWriter: a single write is handed on as the same buffer, not a copy', async () => {
  let handed: Buffer | null = null
  const socket = { destroyed: false, writableLength: 0, write: (data: Buffer) => { handed = data; return true } } as unknown as net.Socket
  const writer = new TickWriter(socket, () => {})
  const reply = Buffer.from('$1\r\nx\r\n')
  writer.write(reply)
  await turn()
  assert.equal(handed, reply)
})

test('TickWriter: a large write first flushes what is held, so order is kept', async () => {
  const { socket, writes } = recordingSocket()
  const writer = new TickWriter(socket, () => {})
  writer.write(Buffer.from('+small\r\n'))
  const big = Buffer.alloc(64 * 1024, 'x')
  writer.write(big)
  assert.equal(writes.length, 2)
  assert.equal(writes[0], '+small\r\n')
  assert.equal(writes[1].length, big.length)
  writer.write(Buffer.from('+after\r\n'))
  await turn()
  assert.deepEqual(writes.slice(2), ['+after\r\n'])
})

test('TickWriter: many writers in one turn each get their own bytes; a full socket is reported', async () => {
  const sockets = Array.from({ length: 50 }, () => recordingSocket())
  const writers = sockets.map(({ socket }) => new TickWriter(socket, () => {}))
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < writers.length; i++) writers[i].write(Buffer.from(`:${i}-${round}\r\n`))
    for (let i = 0; i < writers.length; i += 2) writers[i].write(Buffer.from(`:${i}-${round}b\r\n`))
    await turn()
  }
  for (let i = 0; i < sockets.length; i++) {
    const expected = [0, 1, 2].map((round) => `:${i}-${round}\r\n` + (i % 2 === 0 ? `:${i}-${round}b\r\n` : ''))
    assert.deepEqual(sockets[i].writes, expected)
  }
  const { socket } = recordingSocket(true)
  let full = 0
  const writer = new TickWriter(socket, () => { full++ })
  writer.write(Buffer.from('+x\r\n'))
  await turn()
  assert.equal(full, 1)
})
