import { createServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

import { drained } from '../../src/util/drained.js';
import { Pacer } from './pacer.js';
import { registerCleanup } from './tmp.js';

export interface RelayOptions {
  /** One limit for the target->client direction of all connections together. */
  bytesPerSecond?: number;
  /** Optional limit for client->target (uploads), also shared. */
  uploadBytesPerSecond?: number;
}

export interface Relay {
  port: number;
  /** 127.0.0.1:PORT */
  host: string;
  /** http://127.0.0.1:PORT, when the target speaks HTTP. */
  url: string;
  readonly bytesToClient: number;
  readonly bytesToTarget: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Changes the download limit on the fly; undefined lifts it. */
  setRate(bytesPerSecond: number | undefined): void;
  stop(): Promise<void>;
}

/**
 * A TCP relay to 127.0.0.1:targetPort that models a shared link: every connection
 * draws from one bandwidth budget, as parallel layer downloads do on a real WAN.
 */
export async function startRelay(targetPort: number, options: RelayOptions = {}): Promise<Relay> {
  const down = new Pacer(options.bytesPerSecond);
  const up = new Pacer(options.uploadBytesPerSecond);
  const sockets = new Set<Socket>();
  let bytesToClient = 0;
  let bytesToTarget = 0;
  let connections = 0;

  const server = createServer((client) => {
    connections++;
    const target = connect(targetPort, '127.0.0.1');
    for (const s of [client, target]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      // An error on one side ends the pair; the peer sees a reset like on a real link.
      s.on('error', () => {
        client.destroy();
        target.destroy();
      });
    }
    void pump(target, client, down, (n) => (bytesToClient += n));
    void pump(client, target, up, (n) => (bytesToTarget += n));
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });
    return stopped;
  };
  registerCleanup(stop);

  return {
    port,
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    get bytesToClient() {
      return bytesToClient;
    },
    get bytesToTarget() {
      return bytesToTarget;
    },
    get connections() {
      return connections;
    },
    setRate: (bytesPerSecond) => {
      down.bytesPerSecond = bytesPerSecond;
    },
    stop,
  };
}

/** Copies `from` to `to` at the pacer's rate, honouring `to`'s backpressure. */
async function pump(from: Socket, to: Socket, pacer: Pacer, count: (n: number) => void) {
  try {
    for await (const chunk of from as AsyncIterable<Buffer>) {
      await pacer.take(chunk.length);
      if (to.destroyed) break;
      count(chunk.length);
      if (!to.write(chunk)) await drained(to);
    }
    // Half-close: an HTTP client may still be reading what the target sent.
    if (!to.destroyed) to.end();
  } catch {
    to.destroy();
  }
}
