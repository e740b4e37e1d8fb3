import { spawn } from 'node:child_process'

export interface ProgramResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: Buffer
  stderr: string
}

export interface RunOptions {
  /** Written to the program's stdin, which is then closed. */
  input?: string | Buffer
  /** The program is killed (SIGKILL) after this long; a test never waits on it forever. */
  timeoutMs?: number
  cwd?: string
  env?: NodeJS.ProcessEnv
}

/** Runs a program to completion and collects what it printed. Never throws for a non-zero exit. */
export async function runProgram (program: string, args: string[], options: RunOptions = {}): Promise<ProgramResult> {
  const child = spawn(program, args, { cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe'] })
  const out: Buffer[] = []
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { out.push(d) })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  child.stdin.on('error', () => {}) // a program that exits without reading its input
  child.stdin.end(options.input ?? '')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, options.timeoutMs ?? 15000)
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.on('error', reject)
      child.on('close', (c, s) => { resolve([c, s]) })
    })
    return { code, signal, stdout: Buffer.concat(out), stderr }
  } finally {
    clearTimeout(timer)
  }
}

/** Runs a script on stdin (`python3 -`, `ruby -`) and returns its non-empty stdout lines; fails on a non-zero exit. */
export async function runScript (program: string, args: string[], script: string, timeoutMs = 30000): Promise<string[]> {
  const r = await runProgram(program, args, { input: script, timeoutMs })
  if (r.code !== 0) throw new Error(`${program} exited ${String(r.code ?? r.signal)}\nstdout:\n${r.stdout.toString()}\nstderr:\n${r.stderr}`)
  return r.stdout.toString().split('\n').filter((l) => l !== '')
}
