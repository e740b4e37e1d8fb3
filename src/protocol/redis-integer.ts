/**
 * Integers exactly as Redis reads them from an argument (util.c `string2ll`): an optional '-',
 * then digits with no leading zero (the only number starting with '0' is "0" itself), nothing
 * else: no '+', no spaces, no "-0", no "01". respool answers and decides with these rules only
 * where a value Redis would refuse must be refused the same way (SELECT's database, HELLO's
 * protocol version); anywhere else the argument goes to Redis unchanged.
 *
 * Returns the value, or null when Redis would answer "value is not an integer or out of range".
 */
export function parseRedisInteger (text: string): number | null {
  const n = text.length
  if (n === 0 || n > 20) return null
  if (text === '0') return 0
  let i = 0
  const negative = text.charCodeAt(0) === 45 // '-'
  if (negative) {
    i = 1
    if (n === 1) return null
  }
  const first = text.charCodeAt(i)
  if (first < 49 || first > 57) return null // '1'..'9'
  let value = 0n
  for (; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c < 48 || c > 57) return null
    value = value * 10n + BigInt(c - 48)
  }
  if (negative) value = -value
  if (value > 9223372036854775807n || value < -9223372036854775808n) return null
  return Number(value)
}

/** An integer Redis reads into a C `int` (getIntFromObject): string2ll, then INT range. */
export function parseRedisInt (text: string): number | null {
  const value = parseRedisInteger(text)
  if (value === null || value > 2147483647 || value < -2147483648) return null
  return value
}
