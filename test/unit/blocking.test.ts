import { test } from 'node:test'
import assert from 'node:assert/strict'
import { blockingTimeoutMs, timeoutReply, withTimeout } from '../../src/commands/blocking.js'
import { RequestFramer } from '../../src/protocol/request-framer.js'
import type { RespCommand } from '../../src/protocol/resp-command.js'

function parse (line: string): RespCommand {
  let out: RespCommand | undefined
  new RequestFramer().push(Buffer.from(line + '\r\n'), (c) => { out = c })
  if (out === undefined) throw new Error('no command')
  return out
}

test('a blocking command\'s own timeout, in ms', () => {
  assert.equal(blockingTimeoutMs(parse('BLPOP a b 2')), 2000)
  assert.equal(blockingTimeoutMs(parse('BRPOP q 0.25')), 250)
  assert.equal(blockingTimeoutMs(parse('BLPOP q 0')), 0)
  assert.equal(blockingTimeoutMs(parse('BLMPOP 1.5 1 a LEFT')), 1500)
  assert.equal(blockingTimeoutMs(parse('XREAD COUNT 2 BLOCK 150 STREAMS s $')), 150)
  assert.equal(blockingTimeoutMs(parse('WAIT 1 300')), 300)
  assert.equal(blockingTimeoutMs(parse('BLPOP q nope')), null)
  assert.equal(blockingTimeoutMs(parse('BLPOP q -1')), null)
})

test('timeout replies are null arrays, or RESP3 nulls', () => {
  assert.equal(timeoutReply(2).toString(), '*-1\r\n')
  assert.equal(timeoutReply(3).toString(), '_\r\n')
})

test('withTimeout rewrites only the timeout argument', () => {
  const c = withTimeout(parse('BRPOP queue:a queue:b 2'), 1250)
  assert.equal(c.frame.toString(), '*4\r\n$5\r\nBRPOP\r\n$7\r\nqueue:a\r\n$7\r\nqueue:b\r\n$5\r\n1.250\r\n')
  assert.deepEqual(c.args().map(String), ['BRPOP', 'queue:a', 'queue:b', '1.250'])
  const x = withTimeout(parse('XREAD BLOCK 500 STREAMS s $'), 120.2)
  assert.deepEqual(x.args().map(String), ['XREAD', 'BLOCK', '121', 'STREAMS', 's', '$'])
})
