import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';

import { serve } from './child.js';

/**
 * A steady stream of GETs at a fixed rate, in its own process, timing each one.
 *
 * The load is open-loop: request i is due at start + i / rate whatever happened to the ones
 * before, and its latency counts from when it was due. A closed loop (send, wait, send) would
 * send nothing while the server stalls and so hide most of the stall from its percentiles.
 */

export type LoadRequest =
  | { op: 'start'; urls: string[]; perSecond: number; connections: number }
  | { op: 'stop' };

export type LoadReply =
  | { op: 'started' }
  | {
    op: 'stopped';
    /** When each request was due, in ms since the epoch (comparable across processes). */
    due: Float64Array;
    /** Its latency in ms from due time to the last byte; NaN when it failed. */
    latency: Float64Array;
    errors: number;
    firstError?: string;
  };

interface Run {
  stopping: boolean;
  due: number[];
  latency: number[];
  errors: number;
  firstError?: string;
  pending: Set<Promise<void>>;
  loop: Promise<void>;
}

let run: Run | undefined;

async function handle(msg: LoadRequest): Promise<LoadReply> {
  if (msg.op === 'start') {
    run = start(msg.urls, msg.perSecond, msg.connections);
    return { op: 'started' };
  }
  if (!run) throw new Error('load: stop before start');
  run.stopping = true;
  await run.loop;
  await Promise.all(run.pending);
  const { due, latency, errors, firstError } = run;
  return {
    op: 'stopped',
    due: Float64Array.from(due),
    latency: Float64Array.from(latency),
    errors,
    firstError,
  };
}

function start(urls: string[], perSecond: number, connections: number): Run {
  const agent = new Agent({ connections, pipelining: 1 });
  const state: Run = {
    stopping: false, due: [], latency: [], errors: 0, pending: new Set(), loop: Promise.resolve(),
  };
  const interval = 1000 / perSecond;
  const t0 = performance.now();

  const fire = (i: number, due: number) => {
    const slot = state.due.push(performance.timeOrigin + due) - 1;
    state.latency.push(NaN);
    const done = send(agent, urls[i % urls.length]!)
      .then(() => {
        state.latency[slot] = performance.now() - due;
      })
      .catch((err: Error) => {
        state.errors++;
        state.firstError ??= err.message;
      })
      .finally(() => state.pending.delete(done));
    state.pending.add(done);
  };

  state.loop = (async () => {
    for (let i = 0; !state.stopping; i++) {
      const due = t0 + i * interval;
      const wait = due - performance.now();
      // Timers fire a millisecond late at best: requests due sooner go out now, and
      // latency still counts from their due time.
      if (wait >= 1) await sleep(wait);
      fire(i, due);
    }
  })();
  return state;
}

async function send(agent: Agent, url: string): Promise<void> {
  const res = await request(url, { dispatcher: agent });
  await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new Error(`GET ${url}: ${res.statusCode}`);
}

serve(handle);
