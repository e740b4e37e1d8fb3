import { test } from 'node:test'
import assert from 'node:assert/strict'
import { classify, Kind } from '../../src/commands/command-table.js'
import { RequestFramer } from '../../src/protocol/request-framer.js'
import type { RespCommand } from '../../src/protocol/resp-command.js'

function parse (line: string): RespCommand {
  let out: RespCommand | undefined
  new RequestFramer().push(Buffer.from(line + '\r\n'), (c) => { out = c })
  if (out === undefined) throw new Error('no command')
  return out
}

const TABLE: Array<[string, number]> = [
  ['GET k', Kind.SHARED],
  ['set k v', Kind.SHARED],
  ['EVAL "return 1" 0', Kind.SHARED],
  ['PUBLISH ch msg', Kind.SHARED],
  ['XREAD COUNT 1 STREAMS s 0', Kind.SHARED],
  ['XREAD BLOCK 0 STREAMS s $', Kind.BLOCKING],
  ['xreadgroup GROUP g c BLOCK 100 STREAMS s >', Kind.BLOCKING],
  ['XREAD STREAMS block 0', Kind.SHARED], // a stream named "block"
  ['BLPOP q 0', Kind.BLOCKING],
  ['BRPOP a b 2', Kind.BLOCKING],
  ['BRPOPLPUSH a b 1', Kind.BLOCKING],
  ['BLMOVE a b LEFT RIGHT 1', Kind.BLOCKING],
  ['BLMPOP 1 1 a LEFT', Kind.BLOCKING],
  ['BZPOPMIN z 1', Kind.BLOCKING],
  ['BZMPOP 1 1 z MIN', Kind.BLOCKING],
  ['WAIT 1 0', Kind.BLOCKING],
  ['MULTI', Kind.MULTI],
  ['EXEC', Kind.EXEC],
  ['DISCARD', Kind.DISCARD],
  ['WATCH k', Kind.WATCH],
  ['UNWATCH', Kind.UNWATCH],
  ['SUBSCRIBE a', Kind.SUBSCRIBE],
  ['PSUBSCRIBE a*', Kind.SUBSCRIBE],
  ['SSUBSCRIBE a', Kind.SUBSCRIBE],
  ['UNSUBSCRIBE', Kind.UNSUBSCRIBE],
  ['MONITOR', Kind.MONITOR],
  ['SELECT 1', Kind.SELECT],
  ['AUTH p', Kind.AUTH],
  ['HELLO 3', Kind.HELLO],
  ['CLIENT SETNAME x', Kind.CLIENT],
  ['RESET', Kind.RESET],
  ['QUIT', Kind.QUIT],
  ['SYNC', Kind.DENIED],
  ['PSYNC ? -1', Kind.DENIED],
  ['SHUTDOWN', Kind.SHARED], // refused by the default deny list instead
  ['DEBUG SLEEP 1', Kind.SHARED],
  ['SOMEMODULE.CMD x', Kind.SHARED] // unknown commands are forwarded
]

for (const [line, kind] of TABLE) {
  test(`classify ${line}`, () => { assert.equal(classify(parse(line)), kind) })
}
