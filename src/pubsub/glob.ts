/**
 * Redis's glob matching (`stringmatchlen` in util.c, case-sensitive), as PSUBSCRIBE patterns
 * match channels: `*`, `?`, `[abc]`, `[^a-z]`, `\x`. Both strings are latin1 text, so each
 * character is one byte and binary channel names match byte for byte.
 */
export function globMatch (pattern: string, subject: string): boolean {
  return match(pattern, 0, subject, 0, { skipLonger: false })
}

/** Character code at i, or 0 past the end (C strings end in NUL; Redis reads that byte). */
function at (s: string, i: number): number {
  return i < s.length ? s.charCodeAt(i) : 0
}

function match (p: string, pi: number, s: string, si: number, state: { skipLonger: boolean }): boolean {
  let pLen = p.length - pi
  let sLen = s.length - si
  while (pLen > 0 && sLen > 0) {
    const c = at(p, pi)
    if (c === 0x2a) { // '*'
      while (pLen > 0 && at(p, pi + 1) === 0x2a) {
        pi++
        pLen--
      }
      if (pLen === 1) return true
      while (sLen > 0) {
        if (match(p, pi + 1, s, si, state)) return true
        if (state.skipLonger) return false
        si++
        sLen--
      }
      // Nothing matched the rest from anywhere further on: an earlier '*' cannot help either.
      state.skipLonger = true
      return false
    } else if (c === 0x3f) { // '?'
      si++
      sLen--
    } else if (c === 0x5b) { // '['
      pi++
      pLen--
      const not = at(p, pi) === 0x5e // '^'
      if (not) {
        pi++
        pLen--
      }
      let matched = false
      const sc = at(s, si)
      for (;;) {
        if (at(p, pi) === 0x5c && pLen >= 2) { // '\' escapes the next character
          pi++
          pLen--
          if (at(p, pi) === sc) matched = true
        } else if (at(p, pi) === 0x5d) { // ']'
          break
        } else if (pLen === 0) {
          pi--
          pLen++
          break
        } else if (pLen >= 3 && at(p, pi + 1) === 0x2d) { // a range 'a-z'
          let start = at(p, pi)
          let end = at(p, pi + 2)
          if (start > end) [start, end] = [end, start]
          pi += 2
          pLen -= 2
          if (sc >= start && sc <= end) matched = true
        } else if (at(p, pi) === sc) {
          matched = true
        }
        pi++
        pLen--
      }
      if (not) matched = !matched
      if (!matched) return false
      si++
      sLen--
    } else {
      if (c === 0x5c && pLen >= 2) { // '\': the next character is literal
        pi++
        pLen--
      }
      if (at(p, pi) !== at(s, si)) return false
      si++
      sLen--
    }
    pi++
    pLen--
    if (sLen === 0) {
      while (at(p, pi) === 0x2a && pLen > 0) {
        pi++
        pLen--
      }
      break
    }
  }
  return pLen === 0 && sLen === 0
}
