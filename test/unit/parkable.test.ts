import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parkable, putBack, compareStreamIds } from '../../src/waiting/parkable.js'
import { RequestFramer } from '../../src/protocol/request-framer.js'
import type { RespCommand } from '../../src/protocol/resp-command.js'

function parse (...args: string[]): RespCommand {
  const frame = Buffer.from(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
  let out: RespCommand | null = null
  new RequestFramer().push(frame, (cmd) => { out = cmd })
  return out as unknown as RespCommand
}

const text = (b: Buffer | null): string | null => b === null ? null : b.toString('latin1')
const enc = (...args: string[]): string => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`

test('parkable: keys and kind of each blocking list, sorted-set and stream command; WAIT and unclear stream forms keep their pin', () => {
  assert.deepEqual(parkable(parse('BLPOP', 'a', 'b', 'a', '0')), { family: 'list', keys: ['a', 'b'], end: 'left' })
  assert.deepEqual(parkable(parse('BZPOPMAX', 'z', '1.5')), { family: 'zset', keys: ['z'] })
  assert.deepEqual(parkable(parse('BLMOVE', 's', 'd', 'LEFT', 'RIGHT', '0')), { family: 'list', keys: ['s'], end: 'left' })
  assert.deepEqual(parkable(parse('BRPOPLPUSH', 's', 'd', '0')), { family: 'list', keys: ['s'], end: 'right' })
  assert.deepEqual(parkable(parse('BRPOP', 'q', '0')), { family: 'list', keys: ['q'], end: 'right' })
  assert.deepEqual(parkable(parse('BLMPOP', '0', '2', 'x', 'y', 'RIGHT', 'COUNT', '3')), { family: 'list', keys: ['x', 'y'], end: 'right' })
  assert.deepEqual(parkable(parse('BZMPOP', '0', '1', 'z', 'MIN')), { family: 'zset', keys: ['z'] })
  assert.equal(parkable(parse('BLMPOP', '0', '3', 'x', 'LEFT')), null, 'numkeys beyond the keys: Redis answers the error')
  assert.equal(parkable(parse('BLMPOP', '0', '01', 'x', 'LEFT')), null)
  assert.deepEqual(parkable(parse('XREAD', 'BLOCK', '0', 'STREAMS', 's', '$')), { family: 'stream', keys: ['s'], ids: ['$'] })
  assert.deepEqual(parkable(parse('xread', 'count', '2', 'block', '10', 'streams', 's', 't', '5', '1-2')), { family: 'stream', keys: ['s', 't'], ids: ['5', '1-2'] })
  assert.deepEqual(parkable(parse('XREADGROUP', 'GROUP', 'g', 'c', 'NOACK', 'BLOCK', '0', 'COUNT', '1', 'STREAMS', 's', '>')), { family: 'stream', keys: ['s'], ids: ['>'] })
  assert.equal(parkable(parse('XREADGROUP', 'GROUP', 'g', 'c', 'BLOCK', '0', 'STREAMS', 's', '0')), null, 'history reads never block')
  assert.equal(parkable(parse('XREAD', 'BLOCK', '0', 'STREAMS', 's', 's', '$', '$')), null, 'a key twice')
  assert.equal(parkable(parse('XREAD', 'BLOCK', '0', 'STREAMS', 's', '+')), null)
  assert.equal(parkable(parse('XREAD', 'BLOCK', '0', 'STREAMS', 's', 't', '$')), null, 'odd number after STREAMS')
  assert.equal(parkable(parse('XREAD', 'NOACK', 'BLOCK', '0', 'STREAMS', 's', '$')), null, 'NOACK is XREADGROUP\'s')
  assert.equal(parkable(parse('WAIT', '1', '0')), null)
})

test('compareStreamIds: by milliseconds, then sequence; `ms` means `ms-0`; beyond 2^53', () => {
  assert.equal(compareStreamIds('1-2', '1-10'), -1)
  assert.equal(compareStreamIds('2', '1-99'), 1)
  assert.equal(compareStreamIds('5', '5-0'), 0)
  assert.equal(compareStreamIds('18446744073709551615-1', '18446744073709551615-0'), 1)
})

test('putBack: what a command took goes back to the end it came from (RESP2 and RESP3 replies)', () => {
  assert.equal(text(putBack(parse('BLPOP', 'q', '0'), Buffer.from('*2\r\n$1\r\nq\r\n$1\r\nv\r\n'))), enc('LPUSH', 'q', 'v'))
  assert.equal(text(putBack(parse('BRPOP', 'q', '0'), Buffer.from('*2\r\n$1\r\nq\r\n$1\r\nv\r\n'))), enc('RPUSH', 'q', 'v'))
  assert.equal(text(putBack(parse('BZPOPMIN', 'z', '0'), Buffer.from('*3\r\n$1\r\nz\r\n$1\r\nm\r\n$3\r\n1.5\r\n'))), enc('ZADD', 'z', '1.5', 'm'))
  assert.equal(text(putBack(parse('BZPOPMAX', 'z', '0'), Buffer.from('*3\r\n$1\r\nz\r\n$1\r\nm\r\n,2.5\r\n'))), enc('ZADD', 'z', '2.5', 'm'))
  // BLMPOP LEFT COUNT 2 on [a b c] took a, b: LPUSH b a restores [a b c].
  assert.equal(text(putBack(parse('BLMPOP', '0', '1', 'l', 'LEFT', 'COUNT', '2'), Buffer.from('*2\r\n$1\r\nl\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n'))), enc('LPUSH', 'l', 'b', 'a'))
  assert.equal(text(putBack(parse('BZMPOP', '0', '1', 'z', 'MAX', 'COUNT', '2'), Buffer.from('*2\r\n$1\r\nz\r\n*2\r\n*2\r\n$1\r\nc\r\n$1\r\n3\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n'))), enc('ZADD', 'z', '3', 'c', '2', 'b'))
  const moved = text(putBack(parse('BLMOVE', 's', 'd', 'LEFT', 'RIGHT', '0'), Buffer.from('$1\r\nv\r\n')))
  assert.match(moved ?? '', /^\*8\r\n\$4\r\nEVAL\r\n/)
  assert.ok(moved?.endsWith(enc('2', 's', 'd', 'v', '-1', 'LPUSH').slice(4)), moved ?? '')
  assert.ok(text(putBack(parse('BRPOPLPUSH', 's', 'd', '0'), Buffer.from('$1\r\nv\r\n')))?.endsWith(enc('2', 's', 'd', 'v', '1', 'RPUSH').slice(4)))
  for (const none of ['*-1\r\n', '_\r\n', '$-1\r\n', '-WRONGTYPE x\r\n']) {
    assert.equal(putBack(parse('BLPOP', 'q', '0'), Buffer.from(none)), null, none)
    assert.equal(putBack(parse('BLMOVE', 's', 'd', 'LEFT', 'RIGHT', '0'), Buffer.from(none)), null, none)
  }
})
