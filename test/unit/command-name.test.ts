import { test } from 'node:test'
import assert from 'node:assert/strict'
import commands from '@ioredis/commands'
import { commandName } from '../../src/protocol/command-name.js'

const slow = (b: Buffer, s: number, e: number): string => b.toString('latin1', s, e).toLowerCase()

test('commandName: every known command, in any case and at any offset, is its lowercased name', () => {
  for (const name of commands.list) {
    for (const spelled of [name, name.toUpperCase(), name.replace(/^./, (c) => c.toUpperCase())]) {
      const frame = Buffer.from(`*1\r\n$${spelled.length}\r\n${spelled}\r\n`, 'latin1')
      const start = frame.indexOf(spelled, 0, 'latin1')
      assert.equal(commandName(frame, start, start + spelled.length), name)
    }
  }
})

test('commandName: anything else is exactly toString(latin1).toLowerCase()', () => {
  const cases = ['GETX', 'ge', 'g', '', 'SÉT', 'GÉT', 'x'.repeat(33), 'getgetgetgetgetgetgetgetgetgetget', 'GET\u00ff', 'hello world']
  for (const text of cases) {
    const b = Buffer.from(text, 'latin1')
    assert.equal(commandName(b, 0, b.length), slow(b, 0, b.length), JSON.stringify(text))
  }
  // Random bytes, including the latin1 letters toLowerCase changes (0xC0–0xDE).
  let seed = 12345
  const rand = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed }
  for (let i = 0; i < 5000; i++) {
    const len = rand() % 12
    const b = Buffer.alloc(len)
    for (let j = 0; j < len; j++) b[j] = rand() % 4 === 0 ? rand() % 256 : 'GETSETgetsetHLPU'.charCodeAt(rand() % 16)
    assert.equal(commandName(b, 0, len), slow(b, 0, len))
  }
})
