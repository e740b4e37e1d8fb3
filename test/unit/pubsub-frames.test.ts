import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parsePubsubFrame, commandFamily } from '../../src/protocol/pubsub-frames.js'

const f = (s: string): Buffer => Buffer.from(s, 'latin1')

test('confirmations with counts, RESP2 and RESP3', () => {
  assert.deepEqual(parsePubsubFrame(f('*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n'), 2), { kind: 'subscribe', family: 'channel', name: 'ch', count: 1 })
  assert.deepEqual(parsePubsubFrame(f('>3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n'), 3), { kind: 'unsubscribe', family: 'pattern', name: 'p*', count: 0 })
  assert.deepEqual(parsePubsubFrame(f('*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n'), 2), { kind: 'unsubscribe', family: 'channel', name: null, count: 0 })
  assert.deepEqual(parsePubsubFrame(f('>3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n'), 3), { kind: 'unsubscribe', family: 'channel', name: null, count: 0 })
  assert.deepEqual(parsePubsubFrame(f('*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n'), 2), { kind: 'subscribe', family: 'shard', name: 's', count: 1 })
})

test('messages', () => {
  assert.equal(parsePubsubFrame(f('*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n'), 2)?.kind, 'message')
  assert.equal(parsePubsubFrame(f('*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npx\r\n$2\r\nhi\r\n'), 2)?.kind, 'message')
  assert.equal(parsePubsubFrame(f('>3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nx\r\n'), 3)?.family, 'shard')
})

test('ordinary replies are not pub/sub frames, even when they look alike in the other protocol', () => {
  assert.equal(parsePubsubFrame(f('*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n'), 3), null) // RESP3: only pushes count
  assert.equal(parsePubsubFrame(f('*2\r\n$4\r\npong\r\n$0\r\n\r\n'), 2), null)
  assert.equal(parsePubsubFrame(f('+OK\r\n'), 2), null)
  assert.equal(parsePubsubFrame(f('>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n'), 3), null)
})

test('command families', () => {
  assert.equal(commandFamily('subscribe'), 'channel')
  assert.equal(commandFamily('punsubscribe'), 'pattern')
  assert.equal(commandFamily('ssubscribe'), 'shard')
})
