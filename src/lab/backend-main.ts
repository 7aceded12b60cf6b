#!/usr/bin/env node
// Entry point of the lab backend: `node dist/lab/backend-main.js --host-id N --port 80`.
// `nlb lab up` starts one in every host namespace; its output goes to the lab's log directory.
import { Command, InvalidArgumentError } from 'commander';
import { startBackend } from './backend.js';
import { serviceReader } from './service.js';

function integer(min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    }
    return value;
  };
}

const program = new Command('nlb-lab-backend')
  .description('lab backend: answers GET / HOLD / HTTP GET with its host id')
  .requiredOption('--host-id <n>', 'host id to answer with (1-32)', integer(1, 32))
  .option('--port <n>', 'TCP port', integer(1, 65535), 80)
  .option('--bind <address>', 'address to listen on (:: takes IPv4 and IPv6)', '::')
  .option(
    '--service-file <path>',
    'how the service behaves (ok, refuse, hang, 503, slow; service.ts)',
  )
  .parse();

const options = program.opts<{
  hostId: number;
  port: number;
  bind: string;
  serviceFile?: string;
}>();
const backend = await startBackend({
  hostId: options.hostId,
  port: options.port,
  bindAddress: options.bind,
  service: serviceReader(options.serviceFile),
});
// The lab waits for this line in the log before it reports the host ready.
console.log(
  JSON.stringify({
    event: 'listening',
    hostId: options.hostId,
    port: backend.port,
    pid: process.pid,
  }),
);

const shutdown = (signal: string): void => {
  console.log(JSON.stringify({ event: 'stopping', signal, counters: backend.counters }));
  void backend.close().then(() => process.exit(0));
};
process.once('SIGTERM', () => shutdown('SIGTERM'));
process.once('SIGINT', () => shutdown('SIGINT'));
