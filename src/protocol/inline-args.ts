/**
 * Splits an inline command line into arguments the way Redis's `sdssplitargs` does:
 * blanks separate arguments; "double quotes" understand \n \r \t \b \a \\ \" and \xHH;
 * 'single quotes' understand \'. A closing quote must be followed by a blank or the end.
 * Returns null for unbalanced quotes (Redis answers "Protocol error: unbalanced quotes").
 *
 * Written here because it must match Redis byte for byte, and no package does that.
 */
export function splitInlineArgs (line: Buffer): Buffer[] | null {
  let end = line.length
  if (end > 0 && line[end - 1] === 10) end--
  if (end > 0 && line[end - 1] === 13) end--
  const args: Buffer[] = []
  let i = 0
  while (true) {
    while (i < end && isBlank(line[i])) i++
    if (i >= end) return args
    const bytes: number[] = []
    let inDouble = false
    let inSingle = false
    let done = false
    while (!done) {
      if (inDouble) {
        if (i >= end) return null
        const c = line[i]
        if (c === 0x5c && i + 3 < end && line[i + 1] === 0x78 && isHex(line[i + 2]) && isHex(line[i + 3])) {
          bytes.push(parseInt(String.fromCharCode(line[i + 2], line[i + 3]), 16))
          i += 3
        } else if (c === 0x5c && i + 1 < end) {
          i++
          bytes.push(unescape(line[i]))
        } else if (c === 0x22) {
          if (i + 1 < end && !isBlank(line[i + 1])) return null
          done = true
        } else {
          bytes.push(c)
        }
      } else if (inSingle) {
        if (i >= end) return null
        const c = line[i]
        if (c === 0x5c && i + 1 < end && line[i + 1] === 0x27) {
          i++
          bytes.push(0x27)
        } else if (c === 0x27) {
          if (i + 1 < end && !isBlank(line[i + 1])) return null
          done = true
        } else {
          bytes.push(c)
        }
      } else {
        if (i >= end) break
        const c = line[i]
        if (endsWord(c)) done = true
        else if (c === 0x22) inDouble = true
        else if (c === 0x27) inSingle = true
        else bytes.push(c)
      }
      if (i < end) i++
    }
    args.push(Buffer.from(bytes))
  }
}

/** An unquoted word ends only at a space, tab, CR or LF (sdssplitargs); \v and \f belong to it. */
function endsWord (c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
}

/** Between words, and after a closing quote, any isspace() byte is a blank. */
function isBlank (c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x0b || c === 0x0c
}

function isHex (c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102)
}

function unescape (c: number): number {
  switch (c) {
    case 0x6e: return 0x0a // n
    case 0x72: return 0x0d // r
    case 0x74: return 0x09 // t
    case 0x62: return 0x08 // b
    case 0x61: return 0x07 // a
    default: return c
  }
}
