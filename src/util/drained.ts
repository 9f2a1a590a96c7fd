import type { Writable } from 'node:stream';

/**
 * Resolves when `stream` can take more data or has closed. Both listeners are removed
 * again: a long transfer waits thousands of times and must not pile them up.
 */
export function drained(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
