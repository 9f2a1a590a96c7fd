/**
 * One catalogue of every failure a user can meet. Each code is stable: scripts and tests match
 * on it, never on message text. `oci` and `status` say how the mirror puts it on the wire.
 */
export const ERRORS = {
  WHARF_BAD_USAGE: { oci: 'UNSUPPORTED', status: 400 },
  WHARF_CONFIG_INVALID: { oci: 'UNSUPPORTED', status: 500 },
  WHARF_NAME_INVALID: { oci: 'NAME_INVALID', status: 400 },
  WHARF_REFERENCE_INVALID: { oci: 'MANIFEST_INVALID', status: 400 },
  WHARF_DIGEST_INVALID: { oci: 'DIGEST_INVALID', status: 400 },
  WHARF_PAGINATION_INVALID: { oci: 'PAGINATION_NUMBER_INVALID', status: 400 },
  WHARF_RANGE_INVALID: { oci: 'BLOB_UNKNOWN', status: 416 },
  WHARF_UPSTREAM_UNKNOWN: { oci: 'NAME_UNKNOWN', status: 404 },
  WHARF_NAME_UNKNOWN: { oci: 'NAME_UNKNOWN', status: 404 },
  WHARF_MANIFEST_UNKNOWN: { oci: 'MANIFEST_UNKNOWN', status: 404 },
  WHARF_BLOB_UNKNOWN: { oci: 'BLOB_UNKNOWN', status: 404 },
  WHARF_MANIFEST_INVALID: { oci: 'MANIFEST_INVALID', status: 502 },
  WHARF_MANIFEST_TOO_LARGE: { oci: 'SIZE_INVALID', status: 502 },
  WHARF_UPSTREAM_DIGEST_MISMATCH: { oci: 'DIGEST_INVALID', status: 502 },
  WHARF_UPSTREAM_UNAUTHORIZED: { oci: 'UNAUTHORIZED', status: 401 },
  WHARF_UPSTREAM_DENIED: { oci: 'DENIED', status: 403 },
  WHARF_UPSTREAM_TOO_MANY_REQUESTS: { oci: 'TOOMANYREQUESTS', status: 429 },
  WHARF_UPSTREAM_UNAVAILABLE: { oci: 'UNAVAILABLE', status: 503 },
  WHARF_UPSTREAM_PROTOCOL: { oci: 'UNAVAILABLE', status: 502 },
  WHARF_UPSTREAM_CUT_OFF: { oci: 'UNAVAILABLE', status: 502 },
  WHARF_UNSUPPORTED: { oci: 'UNSUPPORTED', status: 405 },
  WHARF_STORE_FULL: { oci: 'UNAVAILABLE', status: 507 },
  WHARF_STORE_CORRUPT: { oci: 'UNAVAILABLE', status: 500 },
  WHARF_ENGINE_UNREACHABLE: { oci: 'UNAVAILABLE', status: 503 },
  WHARF_ENGINE_ERROR: { oci: 'UNAVAILABLE', status: 502 },
  WHARF_PULL_FAILED: { oci: 'UNAVAILABLE', status: 502 },
  WHARF_PULL_STALLED: { oci: 'UNAVAILABLE', status: 504 },
  WHARF_PLATFORM_UNAVAILABLE: { oci: 'MANIFEST_UNKNOWN', status: 404 },
  WHARF_DEADLINE_EXCEEDED: { oci: 'UNAVAILABLE', status: 504 },
  WHARF_STATE_UNWRITABLE: { oci: 'UNKNOWN', status: 500 },
  WHARF_INTERNAL: { oci: 'UNKNOWN', status: 500 },
} as const;

export type ErrorCode = keyof typeof ERRORS;

export interface WharfErrorOptions {
  /** What the user can do about it, printed under the message. */
  hint?: string;
  cause?: unknown;
  /** Extra fields for logs and `--json` output; never credentials. */
  detail?: Record<string, unknown>;
}

export class WharfError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly detail: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: WharfErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WharfError';
    this.code = code;
    this.hint = options.hint;
    this.detail = options.detail;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  get ociCode(): string {
    return ERRORS[this.code].oci;
  }
}

export function isWharfError(err: unknown, code?: ErrorCode): err is WharfError {
  return err instanceof WharfError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into a WharfError so callers deal with one shape. */
export function toWharfError(err: unknown): WharfError {
  if (err instanceof WharfError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new WharfError('WHARF_INTERNAL', message, { cause: err });
}
