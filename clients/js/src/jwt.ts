// Reads the time claims of a JWT WITHOUT verifying it. The client only uses
// them to decide when to ask for a fresh token; the sidecar verifies every
// token it is given, so a forged claim can only make this client refresh
// early or late, never grant anything.

function base64UrlDecode(s: string): string {
  let b64 = s.replace(/-/g, '+').replace(/_/g, '/');
  while (b64.length % 4 !== 0) b64 += '=';
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

function numericClaim(claims: Record<string, unknown>, name: string): number | undefined {
  const v = claims[name];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function decodeClaims(token: string): Record<string, unknown> | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  try {
    const claims: unknown = JSON.parse(base64UrlDecode(parts[1]));
    return typeof claims === 'object' && claims !== null ? (claims as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The token's `exp` (Unix seconds), or undefined if it is not a JWT with a numeric exp. */
export function decodeJwtExp(token: string): number | undefined {
  const claims = decodeClaims(token);
  return claims ? numericClaim(claims, 'exp') : undefined;
}

/**
 * When, on this machine's clock (ms), a token received at `receivedAt`
 * expires. Two estimates: its `exp` read on the local clock (right for a
 * token that was cached before it was handed over), and `receivedAt` plus
 * its lifetime `exp - iat` (right for a fresh token whatever the local
 * clock says). The earlier one wins, except that an `exp` already past on
 * the local clock says the clock is ahead, not that the token (which the
 * issuer just handed out) is dead. Undefined without an exp.
 */
export function tokenDeadline(token: string, receivedAt: number): number | undefined {
  const claims = decodeClaims(token);
  if (!claims) return undefined;
  const exp = numericClaim(claims, 'exp');
  if (exp === undefined) return undefined;
  const byClock = exp * 1000;
  const iat = numericClaim(claims, 'iat');
  if (iat === undefined || iat > exp) return byClock;
  const byLifetime = receivedAt + (exp - iat) * 1000;
  return byClock > receivedAt ? Math.min(byClock, byLifetime) : byLifetime;
}
