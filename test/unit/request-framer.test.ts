import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RequestFramer, DEFAULT_REQUEST_LIMITS } from '../../src/protocol/request-framer.js'
import { ProtocolError } from '../../src/errors.js'

interface Framed { frame: string, args: string[] }

function frameAll (chunks: Buffer[], framer = new RequestFramer()): Framed[] {
  const out: Framed[] = []
  for (const chunk of chunks) {
    framer.push(chunk, (cmd) => {
      out.push({ frame: cmd.frame.toString('latin1'), args: cmd.args().map((a) => a.toString('latin1')) })
    })
  }
  return out
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

const CASES: Array<{ name: string, input: string, commands: Framed[] }> = [
  { name: 'one multibulk', input: '*2\r\n$3\r\nGET\r\n$1\r\nk\r\n', commands: [{ frame: '*2\r\n$3\r\nGET\r\n$1\r\nk\r\n', args: ['GET', 'k'] }] },
  { name: 'pipeline of three', input: '*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n', commands: [
    { frame: '*1\r\n$4\r\nPING\r\n', args: ['PING'] },
    { frame: '*2\r\n$4\r\nECHO\r\n$0\r\n\r\n', args: ['ECHO', ''] },
    { frame: '*1\r\n$4\r\nPING\r\n', args: ['PING'] }
  ] },
  { name: 'binary argument with CRLF and NUL', input: '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\n\x00\xff\r\r\n', commands: [
    { frame: '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\n\x00\xff\r\r\n', args: ['SET', 'k', 'a\r\n\x00\xff\r'] }
  ] },
  { name: 'inline command', input: 'PING\r\n', commands: [{ frame: '*1\r\n$4\r\nPING\r\n', args: ['PING'] }] },
  { name: 'inline with LF only and extra blanks', input: '  SET  k   v \n', commands: [{ frame: '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n', args: ['SET', 'k', 'v'] }] },
  { name: 'inline with quotes and escapes', input: 'SET "a b" \'c\\\'d\' "\\x41\\n"\r\n', commands: [
    { frame: '*4\r\n$3\r\nSET\r\n$3\r\na b\r\n$3\r\nc\'d\r\n$2\r\nA\n\r\n', args: ['SET', 'a b', "c'd", 'A\n'] }
  ] },
  { name: 'empty inline lines are ignored', input: '\r\n\r\nPING\r\n', commands: [{ frame: '*1\r\n$4\r\nPING\r\n', args: ['PING'] }] },
  { name: '*0 and *-1 are ignored', input: '*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n', commands: [{ frame: '*1\r\n$4\r\nPING\r\n', args: ['PING'] }] },
  { name: 'multibulk then inline', input: '*1\r\n$4\r\nPING\r\nECHO x\r\n', commands: [
    { frame: '*1\r\n$4\r\nPING\r\n', args: ['PING'] },
    { frame: '*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n', args: ['ECHO', 'x'] }
  ] }
]

for (const c of CASES) {
  test(`request framer: ${c.name}: whole`, () => {
    assert.deepEqual(frameAll([b(c.input)]), c.commands)
  })
  test(`request framer: ${c.name}: byte by byte`, () => {
    assert.deepEqual(frameAll([...b(c.input)].map((x) => Buffer.from([x]))), c.commands)
  })
  test(`request framer: ${c.name}: split at every boundary`, () => {
    const input = b(c.input)
    for (let i = 1; i < input.length; i++) {
      assert.deepEqual(frameAll([input.subarray(0, i), input.subarray(i)]), c.commands, `split at ${i}`)
    }
  })
}

const MALFORMED: Array<{ input: string, error: string, limits?: Partial<typeof DEFAULT_REQUEST_LIMITS> & { unauthenticated?: boolean } }> = [
  { input: '*abc\r\n', error: 'Protocol error: invalid multibulk length' },
  { input: '*\r\n', error: 'Protocol error: invalid multibulk length' },
  { input: '*1\r\n+PING\r\n', error: "Protocol error: expected '$', got '+'" },
  { input: '*1\r\n$-2\r\n', error: 'Protocol error: invalid bulk length' },
  { input: '*1\r\n$-1\r\n', error: 'Protocol error: invalid bulk length' },
  { input: '*1\r\n$99999999999\r\n', error: 'Protocol error: invalid bulk length' },
  { input: '*1\r\n$1x\r\n', error: 'Protocol error: invalid bulk length' },
  { input: '*99999999999999999999\r\n', error: 'Protocol error: invalid multibulk length' },
  { input: '*3000000000\r\n', error: 'Protocol error: invalid multibulk length' },
  { input: 'SET "a\r\n', error: 'Protocol error: unbalanced quotes in request' },
  { input: 'x'.repeat(70 * 1024), error: 'Protocol error: too big inline request' },
  { input: '*11\r\n', error: 'Protocol error: unauthenticated multibulk length', limits: { unauthenticated: true } },
  { input: '*1\r\n$16385\r\n', error: 'Protocol error: unauthenticated bulk length', limits: { unauthenticated: true } },
  { input: '*1\r\n$11\r\n', error: 'Protocol error: invalid bulk length', limits: { maxBulkLength: 10 } }
]

for (const m of MALFORMED) {
  test(`request framer rejects ${JSON.stringify(m.input.slice(0, 30))}`, () => {
    const framer = new RequestFramer({ ...DEFAULT_REQUEST_LIMITS, ...m.limits })
    assert.throws(() => { frameAll([b(m.input)], framer) }, (err: unknown) => {
      assert.ok(err instanceof ProtocolError)
      assert.equal(err.message, m.error)
      return true
    })
    // A dead framer accepts nothing more, even valid input.
    assert.deepEqual(frameAll([b('*1\r\n$4\r\nPING\r\n')], framer), [])
  })
}

test('request framer delivers the commands before the bad bytes', () => {
  const framer = new RequestFramer()
  const seen: string[] = []
  assert.throws(() => {
    framer.push(b('*1\r\n$4\r\nPING\r\n*1\r\n+X\r\n'), (cmd) => { seen.push(cmd.name) })
  }, ProtocolError)
  assert.deepEqual(seen, ['ping'])
})

test('request framer: a big argument arriving in many chunks is joined once, in linear time', (t) => {
  const size = 32 * 1024 * 1024
  const payload = Buffer.alloc(size, 0x61)
  const input = Buffer.concat([b(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${size}\r\n`), payload, b('\r\n')])
  const framer = new RequestFramer()
  const frames: Buffer[] = []
  const started = performance.now()
  for (let i = 0; i < input.length; i += 64 * 1024) framer.push(input.subarray(i, i + 64 * 1024), (cmd) => { frames.push(cmd.arg(2)) })
  const ms = performance.now() - started
  assert.equal(frames.length, 1)
  assert.equal(frames[0].length, size)
  assert.ok(frames[0].equals(payload))
  t.diagnostic(`framed in ${Math.round(ms)} ms`)
  // Quadratic re-scanning would take far longer; linear work takes milliseconds. The bound leaves
  // room for a loaded machine.
  assert.ok(ms < 10_000, `took ${ms} ms`)
})

test('request framer: commands inside one chunk are views, not copies', () => {
  const chunk = b('*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n')
  const frames: Buffer[] = []
  new RequestFramer().push(chunk, (cmd) => { frames.push(cmd.frame) })
  assert.equal(frames.length, 2)
  assert.equal(frames[0].buffer, chunk.buffer)
  assert.equal(frames[1].byteOffset, chunk.byteOffset + 14)
  const lone = b('*1\r\n$4\r\nPING\r\n')
  let got: Buffer | null = null
  new RequestFramer().push(lone, (cmd) => { got = cmd.frame })
  assert.equal(got, lone, 'a command that is the whole chunk is the chunk itself')
})
