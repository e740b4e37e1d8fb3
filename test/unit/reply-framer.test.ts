import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ReplyFramer } from '../../src/protocol/reply-framer.js'
import { ProtocolError } from '../../src/errors.js'

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

function frameAll (chunks: Buffer[]): string[] {
  const framer = new ReplyFramer()
  const out: string[] = []
  for (const chunk of chunks) framer.push(chunk, (f) => { out.push(f.toString('latin1')) })
  return out
}

const CASES: Array<{ name: string, frames: string[] }> = [
  { name: 'simple string, error, integer', frames: ['+OK\r\n', '-ERR wrong\r\n', ':123\r\n'] },
  { name: 'big integer beyond 2^53', frames: [':9223372036854775807\r\n', ':-9223372036854775808\r\n'] },
  { name: 'bulk, empty bulk, null bulk', frames: ['$5\r\nhello\r\n', '$0\r\n\r\n', '$-1\r\n'] },
  { name: 'binary bulk with CRLF and NUL', frames: ['$7\r\n\r\n\x00\r\n\xff\n\r\n'] },
  { name: 'arrays: nested, empty, null', frames: ['*2\r\n*1\r\n:1\r\n*0\r\n\r\n'.replace('\r\n\r\n', '\r\n'), '*0\r\n', '*-1\r\n', '*3\r\n$1\r\na\r\n*2\r\n+x\r\n$-1\r\n:5\r\n'] },
  { name: 'RESP3 scalars', frames: ['_\r\n', '#t\r\n', ',3.14\r\n', ',inf\r\n', '(3492890328409238509324850943850943825024385\r\n', '!21\r\nSYNTAX invalid syntax\r\n', '=15\r\ntxt:Some string\r\n'] },
  { name: 'RESP3 aggregates', frames: ['%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n', '~2\r\n+x\r\n+y\r\n', '>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n', '%0\r\n'] },
  { name: 'attribute before its value', frames: ['|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n'] },
  { name: 'deep nesting', frames: ['*1\r\n'.repeat(50) + ':1\r\n'] }
]

for (const c of CASES) {
  const input = b(c.frames.join(''))
  test(`reply framer: ${c.name}: whole`, () => { assert.deepEqual(frameAll([input]), c.frames) })
  test(`reply framer: ${c.name}: byte by byte`, () => { assert.deepEqual(frameAll([...input].map((x) => Buffer.from([x]))), c.frames) })
  test(`reply framer: ${c.name}: split at every boundary`, () => {
    for (let i = 1; i < input.length; i++) assert.deepEqual(frameAll([input.subarray(0, i), input.subarray(i)]), c.frames, `split at ${i}`)
  })
}

for (const junk of ['?\r\n', 'hello\r\n', '$x\r\n', '*-2\r\n', '$?\r\n', '*1\r\n@\r\n']) {
  test(`reply framer rejects ${JSON.stringify(junk)}`, () => {
    assert.throws(() => frameAll([b(junk)]), ProtocolError)
  })
}

test('reply framer: a 64 MB bulk in 64 KB chunks is framed in linear time', (t) => {
  const size = 64 * 1024 * 1024
  const input = Buffer.concat([b(`$${size}\r\n`), Buffer.alloc(size, 1), b('\r\n+OK\r\n')])
  const framer = new ReplyFramer()
  const lengths: number[] = []
  const started = performance.now()
  for (let i = 0; i < input.length; i += 65536) framer.push(input.subarray(i, i + 65536), (f) => { lengths.push(f.length) })
  const ms = performance.now() - started
  assert.deepEqual(lengths, [size + `$${size}\r\n`.length + 2, 5])
  t.diagnostic(`framed in ${Math.round(ms)} ms`)
  // Linear work takes milliseconds; re-scanning what was received for each of the 1024 chunks
  // would take minutes. The bound leaves room for a loaded machine.
  assert.ok(ms < 10_000, `took ${ms} ms`)
})

test('reply framer rejects a bulk payload that is not followed by CRLF', () => {
  assert.throws(() => frameAll([b('$3\r\nabcX\r\n')]), ProtocolError)
  assert.throws(() => frameAll([b('$3\r\nabc\rX')]), ProtocolError)
  assert.throws(() => frameAll([b('$3\r\nab'), b('c\r'), b('X')]), ProtocolError)
})

test('reply framer: replies inside one chunk are views of it, and a reply that is the whole chunk is the chunk', () => {
  const chunk = b('+OK\r\n$3\r\nabc\r\n')
  const frames: Buffer[] = []
  new ReplyFramer().push(chunk, (f) => { frames.push(f) })
  assert.deepEqual(frames.map((f) => f.toString('latin1')), ['+OK\r\n', '$3\r\nabc\r\n'])
  assert.equal(frames[0].buffer, chunk.buffer)
  assert.equal(frames[1].byteOffset, chunk.byteOffset + 5)
  const lone = b('$3\r\nabc\r\n')
  let got: Buffer | null = null
  new ReplyFramer().push(lone, (f) => { got = f })
  assert.equal(got, lone)
})

test('reply framer, transient mode: a large reply streams as views of each chunk, flagged transient, and the copies add up to it exactly', () => {
  const size = 3 * 1024 * 1024 + 17
  const value = Buffer.alloc(size)
  for (let i = 0; i < size; i++) value[i] = (i * 7 + (i >> 9)) & 0xff
  const input = Buffer.concat([b(`$${size}\r\n`), value, b('\r\n+OK\r\n')])
  const framer = new ReplyFramer({ transient: true })
  const read = Buffer.alloc(65536) // reused for every read, as the shared read buffer is
  const pieces: Buffer[] = []
  const whole: Buffer[] = []
  let done = 0
  let transientPieces = 0
  for (let i = 0; i < input.length; i += 65536) {
    const n = input.copy(read, 0, i, i + 65536)
    framer.push(read.subarray(0, n), (f, transient) => { whole.push(transient ? Buffer.from(f) : f) }, (piece, last, transient) => {
      if (transient) {
        transientPieces++
        assert.equal(piece.buffer, read.buffer, 'a transient piece is a view of the chunk')
      }
      pieces.push(transient ? Buffer.from(piece) : piece)
      if (last) done++
    })
    read.fill(0x21) // the next read overwrites it
  }
  assert.equal(done, 1)
  // The first megabyte is held until the reply is known to be large; the rest streams as views.
  assert.ok(transientPieces >= 30, `${transientPieces} transient pieces`)
  assert.ok(Buffer.concat(pieces).equals(input.subarray(0, input.length - 5)))
  assert.deepEqual(whole.map((f) => f.toString('latin1')), ['+OK\r\n'])
})
