/**
 * Micro-benchmark of the RESP framers (src/protocol/request-framer.ts, src/protocol/reply-framer.ts), kept apart
 * from the end-to-end numbers (like Envoy's *_speed_test.cc): canned byte streams cut into 64 KB
 * chunks, as a socket would deliver them, fed to a fresh framer; MB/s and frames/s, median of
 * rounds. No sockets, no other process.
 *
 *   npm run build && node dist/benchmarks/framer.bench.js
 *   FRAMER_ROUNDS=11 FRAMER_MIN_MS=500 CHUNK_KB=16 node dist/benchmarks/framer.bench.js
 */
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { availableParallelism, cpus } from 'node:os'
import { RequestFramer } from '../src/protocol/request-framer.js'
import { ReplyFramer } from '../src/protocol/reply-framer.js'
import { RESULTS_DIR, median, revision, revisionNote } from './lib/harness.js'
import { fmtInt, markdownTable, textTable, type Table } from './lib/table.js'

const QUICK = process.env.QUICK === '1'
const ROUNDS = Math.max(1, Number(process.env.FRAMER_ROUNDS ?? (QUICK ? 3 : 7)))
const MIN_MS = Math.max(10, Number(process.env.FRAMER_MIN_MS ?? (QUICK ? 100 : 300)))
const CHUNK = Math.max(1, Number(process.env.CHUNK_KB ?? 64)) * 1024

interface Case {
  name: string
  framer: 'request' | 'reply'
  stream: Buffer
  frames: number
}

const enc = (args: Array<string | Buffer>): Buffer => {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}

function repeat (frames: Buffer[], count: number): Buffer {
  const out: Buffer[] = []
  for (let i = 0; i < count; i++) out.push(frames[i % frames.length])
  return Buffer.concat(out)
}

function cases (): Case[] {
  const out: Case[] = []
  // Small GETs: 20,000 pipelined GETs and their 3-byte replies.
  const n = 20000
  out.push({ name: 'small GETs (20k pipelined)', framer: 'request', stream: repeat(Array.from({ length: 64 }, (_, i) => enc(['GET', `key:${String(i).padStart(12, '0')}`])), n), frames: n })
  out.push({ name: 'small GET replies (20k, $3)', framer: 'reply', stream: repeat([Buffer.from('$3\r\nxxx\r\n'), Buffer.from('$-1\r\n')], n), frames: n })
  // 1 KB values.
  const kb = Buffer.alloc(1024, 0x62)
  const m = 4000
  out.push({ name: 'SET with 1 KB values (4k)', framer: 'request', stream: repeat([enc(['SET', 'key:000000000001', kb])], m), frames: m })
  out.push({ name: '1 KB bulk replies (4k)', framer: 'reply', stream: repeat([Buffer.concat([Buffer.from('$1024\r\n'), kb, Buffer.from('\r\n')])], m), frames: m })
  // Mixed commands (multibulk of several sizes and inline).
  const mixedReq = [
    enc(['GET', 'user:1']), enc(['SET', 'user:1', 'x'.repeat(100)]), enc(['HSET', 'h', 'f1', 'v1', 'f2', 'v2', 'f3', 'v3']),
    enc(['MGET', ...Array.from({ length: 10 }, (_, i) => `k${i}`)]), Buffer.from('PING\r\n'), enc(['INCR', 'counter']),
    enc(['EVALSHA', 'a'.repeat(40), '1', 'k', 'arg'])
  ]
  out.push({ name: 'mixed commands incl. inline (20k)', framer: 'request', stream: repeat(mixedReq, n), frames: n })
  // Mixed RESP3 replies: every type, nested aggregates, attributes, pushes.
  const mixedRep = [
    '+OK\r\n', ':12345\r\n', ',3.14159\r\n', '(3492890328409238509324850943850943825024385\r\n', '_\r\n', '#t\r\n',
    '=15\r\ntxt:Some string\r\n', '%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n', '~3\r\n+a\r\n+b\r\n+c\r\n',
    '>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n',
    '|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n',
    '*3\r\n*2\r\n:1\r\n:2\r\n%1\r\n+k\r\n*1\r\n$3\r\nabc\r\n_\r\n', '-ERR unknown command\r\n', '!21\r\nSYNTAX invalid syntax\r\n',
    '*-1\r\n', '$-1\r\n', '*0\r\n', `$100\r\n${'v'.repeat(100)}\r\n`
  ].map((s) => Buffer.from(s))
  out.push({ name: 'mixed RESP3 replies (20k)', framer: 'reply', stream: repeat(mixedRep, n), frames: n })
  // One 64 MB bulk, in 64 KB chunks.
  const big = 64 * 1024 * 1024
  const payload = Buffer.alloc(big, 0x63)
  out.push({ name: 'one 64 MB SET', framer: 'request', stream: Buffer.concat([Buffer.from(`*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$${big}\r\n`), payload, Buffer.from('\r\n')]), frames: 1 })
  out.push({ name: 'one 64 MB bulk reply', framer: 'reply', stream: Buffer.concat([Buffer.from(`$${big}\r\n`), payload, Buffer.from('\r\n')]), frames: 1 })
  return out
}

function chunks (stream: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < stream.length; i += CHUNK) out.push(stream.subarray(i, Math.min(stream.length, i + CHUNK)))
  return out
}

/** Feeds the stream once through a fresh framer; returns the frames seen. */
function once (c: Case, parts: Buffer[]): number {
  let frames = 0
  if (c.framer === 'request') {
    const f = new RequestFramer()
    const on = (): void => { frames++ }
    for (const p of parts) f.push(p, on)
  } else {
    const f = new ReplyFramer()
    const on = (): void => { frames++ }
    for (const p of parts) f.push(p, on)
  }
  return frames
}

interface Row { name: string, framer: string, bytes: number, frames: number, mbPerSec: number, framesPerSec: number, rounds: Array<{ mbPerSec: number, framesPerSec: number }> }

function run (c: Case): Row {
  const parts = chunks(c.stream)
  const got = once(c, parts)
  if (got !== c.frames) throw new Error(`${c.name}: framer produced ${got} frames, expected ${c.frames}`)
  for (let i = 0; i < 3; i++) once(c, parts) // warm-up (JIT)
  const rounds: Row['rounds'] = []
  for (let r = 0; r < ROUNDS; r++) {
    let iters = 0
    const t0 = performance.now()
    let t = t0
    do {
      once(c, parts)
      iters++
      t = performance.now()
    } while (t - t0 < MIN_MS)
    const s = (t - t0) / 1000
    rounds.push({ mbPerSec: (c.stream.length * iters) / s / 1e6, framesPerSec: (c.frames * iters) / s })
  }
  return {
    name: c.name,
    framer: c.framer,
    bytes: c.stream.length,
    frames: c.frames,
    mbPerSec: median(rounds.map((x) => x.mbPerSec)),
    framesPerSec: median(rounds.map((x) => x.framesPerSec)),
    rounds
  }
}

function main (): void {
  const rows: Row[] = []
  for (const c of cases()) {
    const row = run(c)
    rows.push(row)
    process.stderr.write(`${c.framer} framer, ${c.name}: ${row.mbPerSec.toFixed(0)} MB/s, ${fmtInt(row.framesPerSec)} frames/s\n`)
  }
  const table: Table = {
    title: `RESP framers, ${CHUNK / 1024} KB chunks — median of ${ROUNDS} rounds of ≥ ${MIN_MS} ms`,
    headers: ['framer', 'stream', 'bytes', 'frames', 'MB/s', 'frames/s'],
    rows: rows.map((r) => [r.framer, r.name, fmtInt(r.bytes), fmtInt(r.frames), fmtInt(r.mbPerSec), fmtInt(r.framesPerSec)]),
    notes: ['MB = 10^6 bytes; the framer only finds boundaries (and joins a frame that spans chunks once); no sockets involved']
  }
  const rev = revision()
  table.notes?.push(`${revisionNote(rev)}; node ${process.version} on ${availableParallelism()} × ${cpus()[0]?.model ?? 'unknown'}`)
  const meta = { nproc: availableParallelism(), cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, chunkBytes: CHUNK, rounds: ROUNDS, minMs: MIN_MS, ...rev }
  mkdirSync(RESULTS_DIR, { recursive: true })
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '')
  const base = join(RESULTS_DIR, `framer-bench-${stamp}`)
  writeFileSync(`${base}.json`, JSON.stringify({ meta, rows }, null, 2))
  writeFileSync(`${base}.md`, `${markdownTable(table)}\n`)
  copyFileSync(`${base}.json`, join(RESULTS_DIR, 'latest-framer.json'))
  copyFileSync(`${base}.md`, join(RESULTS_DIR, 'latest-framer.md'))
  process.stdout.write(`${textTable(table)}\n\nnode ${meta.node} on ${meta.nproc} × ${meta.cpuModel}\nWrote ${base}.json and .md\n`)
}

main()
