import { test } from 'node:test'
import assert from 'node:assert/strict'
import type net from 'node:net'
import { setImmediate as turn } from 'node:timers/promises'
import { TickWriter, spareStreamPieceBuffers } from '../../src/protocol/write-batcher.js'

/** An owner that ignores a full socket. */
const quiet = { onOutputFull: () => {} }

/** Records what TickWriter hands to the socket; `full` makes write() report a full buffer. */
function recordingSocket (full = false): { socket: net.Socket, writes: string[] } {
  const writes: string[] = []
  const socket = { destroyed: false, writableLength: 0, write: (data: Buffer) => { writes.push(data.toString()); return !full } }
  return { socket: socket as unknown as net.Socket, writes }
}

test('TickWriter: writes of one turn reach the socket as one write, in order, after the turn', async () => {
  const { socket, writes } = recordingSocket()
  const writer = new TickWriter(socket, quiet)
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
  const writer = new TickWriter(socket, quiet)
  const reply = Buffer.from('$1\r\nx\r\n')
  writer.write(reply)
  await turn()
  assert.equal(handed, reply)
})

test('TickWriter: a large write first flushes what is held, so order is kept', async () => {
  const { socket, writes } = recordingSocket()
  const writer = new TickWriter(socket, quiet)
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
  const writers = sockets.map(({ socket }) => new TickWriter(socket, quiet))
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
  const writer = new TickWriter(socket, { onOutputFull: () => { full++ } })
  writer.write(Buffer.from('+x\r\n'))
  await turn()
  assert.equal(full, 1)
})

/** A socket that keeps what it is given (a view is read only later) and may report it still holds bytes. */
function holdingSocket (): { socket: net.Socket, held: Buffer[], holding: { value: boolean } } {
  const held: Buffer[] = []
  const holding = { value: false }
  const socket = {
    destroyed: false,
    get writableLength () { return holding.value ? 1 : 0 },
    write: (data: Buffer) => { held.push(data); return true }
  }
  return { socket: socket as unknown as net.Socket, held, holding }
}

test('TickWriter: writes joined in the shared arena are never overwritten while a socket still holds them', async () => {
  const a = holdingSocket()
  const b = holdingSocket()
  const writerA = new TickWriter(a.socket, quiet)
  const writerB = new TickWriter(b.socket, quiet)
  writerA.write(Buffer.from('+a1\r\n'))
  writerA.write(Buffer.from('+a2\r\n'))
  a.holding.value = true // A's socket keeps its write (its buffer is full)
  await turn()
  writerB.write(Buffer.from('+b1\r\n'))
  writerB.write(Buffer.from('+b2\r\n'))
  await turn()
  assert.equal(a.held[0].toString(), '+a1\r\n+a2\r\n')
  assert.equal(b.held[0].toString(), '+b1\r\n+b2\r\n')
  // B's socket took its write at once: the arena is B's no longer and serves the next join.
  const firstB = b.held[0]
  writerB.write(Buffer.from('+b3\r\n'))
  writerB.write(Buffer.from('+b4\r\n'))
  await turn()
  assert.equal(b.held[1].toString(), '+b3\r\n+b4\r\n')
  assert.equal(b.held[1].buffer, firstB.buffer, 'the arena is reused')
  assert.equal(a.held[0].toString(), '+a1\r\n+a2\r\n')
})

test('TickWriter: a turn larger than the arena goes out in order, in several writes', async () => {
  const { socket, writes } = recordingSocket()
  const writer = new TickWriter(socket, quiet)
  const pieces: string[] = []
  for (let i = 0; i < 40; i++) pieces.push(`$16384\r\n${String(i % 10).repeat(16384)}\r\n`)
  for (const p of pieces) writer.write(Buffer.from(p))
  await turn()
  assert.ok(writes.length > 1)
  assert.equal(writes.join(''), pieces.join(''))
})

test('TickWriter: a transient write is copied at once, and the copy outlives the source until the socket has it', async () => {
  const a = holdingSocket()
  const b = holdingSocket()
  const writerA = new TickWriter(a.socket, quiet)
  const writerB = new TickWriter(b.socket, quiet)
  const source = Buffer.from('$5\r\nhello\r\n')
  writerA.writeTransient(source)
  source.fill(0x21) // the read buffer is reused at once
  source.write('$5\r\nworld\r\n')
  writerB.writeTransient(source)
  source.fill(0x21)
  a.holding.value = true // A's socket keeps its write
  await turn()
  assert.equal(a.held[0].toString(), '$5\r\nhello\r\n')
  assert.equal(b.held[0].toString(), '$5\r\nworld\r\n')
  // A kept its write, so the next turn's copies go elsewhere: A's bytes stay as they were.
  for (let i = 0; i < 100; i++) {
    source.write(`$5\r\nx${String(i).padStart(4, '0')}\r\n`)
    writerB.writeTransient(source)
    source.fill(0x21)
    await turn()
  }
  assert.equal(a.held[0].toString(), '$5\r\nhello\r\n')
  assert.equal(b.held[100].toString(), '$5\r\nx0099\r\n')
  // Nobody holds anything now: the turn arena is reused from turn to turn.
  assert.equal(b.held[99].buffer, b.held[100].buffer)
})

test('TickWriter: a streamed piece is copied at once, after what is held, and its buffer is reused only once the socket is done with it', async () => {
  const writes: Array<{ data: Buffer, done: () => void }> = []
  const socket = {
    destroyed: false,
    writableLength: 0,
    write: (data: Buffer, done: () => void) => { writes.push({ data, done }); return true }
  } as unknown as net.Socket
  const writer = new TickWriter(socket, quiet)
  writer.write(Buffer.from('+held\r\n'))
  const read = Buffer.alloc(64 * 1024, 'a') // the shared read buffer
  writer.writePiece(read)
  read.fill('b')
  writer.writePiece(read.subarray(0, 1000))
  read.fill('c')
  // The held write went first; each piece is its own copy, taken before the source changed.
  assert.equal(writes.length, 3)
  assert.equal(writes[0].data.toString(), '+held\r\n')
  assert.ok(writes[1].data.equals(Buffer.alloc(64 * 1024, 'a')))
  assert.ok(writes[2].data.equals(Buffer.alloc(1000, 'b')))
  // Neither socket write is done: the two pieces are in separate memory.
  assert.notEqual(writes[1].data.buffer, writes[2].data.buffer)
  const spare = spareStreamPieceBuffers()
  writes[1].done()
  assert.equal(spareStreamPieceBuffers(), spare + 1)
  // The next piece reuses the released buffer, and the piece still held is untouched.
  writer.writePiece(Buffer.alloc(10, 'd'))
  assert.equal(writes[3].data.buffer, writes[1].data.buffer)
  assert.equal(writes[3].data.toString(), 'dddddddddd')
  assert.ok(writes[2].data.equals(Buffer.alloc(1000, 'b')))
  assert.equal(spareStreamPieceBuffers(), spare)
  writes[2].done()
  writes[3].done()
  await turn()
})
