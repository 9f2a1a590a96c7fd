import type { ErrorCode, WharfError } from '../errors.js';

export type SourceKind = 'mirror' | 'origin';
export type EnsureSource = 'local' | SourceKind | 'stale-local';

/** What `wharf ensure` did for one image: what DESIGN.md promises scripts, and more. */
export interface EnsureResult {
  image: string;
  /** The digest the tag resolved to (an index's digest for a multi-platform image). */
  digest: string;
  /** The entry chosen from an index, when the image has one. */
  platformDigest?: string;
  platform?: string;
  source: EnsureSource;
  seconds: number;
  /** Seconds spent per phase. */
  phases: { resolve: number; pull: number };
  /** Bytes the engine downloaded. */
  bytes: number;
  /** The engine's image id. */
  id: string;
  /** Size of the image on the engine, bytes. */
  size: number;
  /** Why an older local copy was accepted (source `stale-local`). */
  stale?: { code: ErrorCode; message: string };
}

export interface ErrorSummary {
  code: ErrorCode;
  message: string;
  hint?: string;
}

export function summarize(err: WharfError): ErrorSummary {
  return err.hint ? { code: err.code, message: err.message, hint: err.hint } : {
    code: err.code,
    message: err.message,
  };
}

/** Events the agent emits while it works; the reporters turn them into lines, bars or JSON. */
export type AgentEvent =
  | { type: 'resolved'; image: string; digest: string; via: SourceKind; ms: number }
  | { type: 'source-failed'; image: string; source: SourceKind; phase: 'resolve' | 'pull';
      error: ErrorSummary }
  | { type: 'pull-start'; image: string; source: SourceKind; ref: string }
  | { type: 'pull-progress'; image: string; source: SourceKind; bytes: number; total: number }
  | { type: 'pull-retry'; image: string; attempt: number; delayMs: number; error: ErrorSummary }
  | { type: 'ensured'; result: EnsureResult }
  | { type: 'image-failed'; image: string; error: ErrorSummary }
  | { type: 'removed'; image: string; id: string; reason: RemovalReason; bytes: number }
  | { type: 'remove-failed'; image: string; id: string; error: ErrorSummary }
  | { type: 'cycle-start'; cycle: number; images: number; trigger: CycleTrigger }
  | { type: 'cycle-end'; report: CycleReport }
  | { type: 'tag-moved'; image: string; from: string | undefined; to: string }
  | { type: 'disk-low'; path: string; free: number; floor: number };

export type RemovalReason = 'keep' | 'unused' | 'disk-floor';
export type CycleTrigger = 'start' | 'schedule' | 'watch' | 'once';

export type WarmAction = 'present' | 'pulled' | 'pruned' | 'failed';

/** One row of the table a warm cycle ends with. */
export interface CycleRow {
  image: string;
  digest: string;
  action: WarmAction;
  /** Where a pulled image came from, or the error of a failed one. */
  source?: EnsureSource;
  error?: ErrorSummary;
  seconds: number;
  /** Bytes on disk (present, pulled) or freed (pruned). */
  size: number;
  bytes?: number;
}

export interface CycleReport {
  cycle: number;
  trigger: CycleTrigger;
  rows: CycleRow[];
  failed: number;
  seconds: number;
}

export type EventSink = (event: AgentEvent) => void;
