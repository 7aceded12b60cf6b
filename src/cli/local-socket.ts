// Which local nlbd `nlb` talks to: --socket PATH; or --config FILE (the path nlbd derives from
// that config); or --lab NAME --host ID (a lab host's config); or, with none of these, the one
// nlbd socket in /run/nlb, and when there are several (a lab: its hosts share /run), the one
// whose daemon lives in this network namespace. So `nlb lab exec h1 -- nlb query` asks h1's
// nlbd. Remote control (--host ADDR --token-file FILE) is resolved in commands/control.ts.
import { readdirSync } from 'node:fs';
import { currentNetns } from '../node/package-info.js';
import path from 'node:path';
import { controlAsk } from '../control/client.js';
import { defaultSocketPath, runDirDefault } from '../control/paths.js';
import { LabError, loadLab } from '../lab/lab.js';
import { loadConfigFile } from '../node/config-file.js';
import { parseHostIdArgument } from './arguments.js';
import { NlbError, badArgument } from './errors.js';
import { exitCodes } from './exit-codes.js';

export interface SocketOptions {
  readonly socket?: string;
  readonly config?: string;
  readonly lab?: string;
  readonly host?: string;
}

export const runningHint =
  'is nlbd running on this host? start it with `nlbd --config <file>`; ' +
  'if it uses another socket, name it with --socket PATH (or --config FILE)';

async function socketOfConfig(file: string, flag: string): Promise<string> {
  const loaded = await loadConfigFile(file);
  if (!loaded.ok) {
    throw new NlbError(
      'bad-config',
      loaded.message,
      `${flag} must name a valid host config`,
      exitCodes.usage,
    );
  }
  return defaultSocketPath(loaded.config.cluster.name, loaded.config.host.id);
}

/** The control socket these options name (see the header comment for the order). */
export async function resolveSocket(options: SocketOptions): Promise<string> {
  if (options.socket !== undefined) {
    return options.socket;
  }
  if (options.lab !== undefined || options.host !== undefined) {
    if (options.lab === undefined || options.host === undefined) {
      const given = options.lab === undefined ? '--host' : '--lab';
      const missing = options.lab === undefined ? '--lab' : '--host';
      throw badArgument(given, `needs ${missing} too`, 'give both, e.g. --lab demo --host 2');
    }
    const hostId = parseHostIdArgument('--host', options.host);
    let configPath: string | undefined;
    try {
      configPath = loadLab(options.lab).hosts.find((h) => h.id === hostId)?.config;
    } catch (error) {
      if (error instanceof LabError) {
        throw new NlbError('bad-argument', error.message, error.hint ?? '', exitCodes.usage);
      }
      throw error;
    }
    if (configPath === undefined) {
      throw badArgument(
        '--host',
        `lab '${options.lab}' has no host ${hostId}`,
        'see `nlb lab status`',
      );
    }
    return socketOfConfig(configPath, '--lab/--host');
  }
  if (options.config !== undefined) {
    return socketOfConfig(options.config, '--config');
  }
  let sockets: string[];
  try {
    sockets = readdirSync(runDirDefault)
      .filter((name) => /^nlbd-.+\.sock$/.test(name))
      .sort()
      .map((name) => path.join(runDirDefault, name));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    sockets = [];
    if (code === 'EACCES') {
      throw new NlbError(
        'failed',
        `cannot list ${runDirDefault}: permission denied`,
        'run nlb as root (sudo nlb query)',
        exitCodes.failed,
      );
    }
  }
  if (sockets.length === 0) {
    throw new NlbError(
      'failed',
      `no nlbd control socket in ${runDirDefault}`,
      runningHint,
      exitCodes.failed,
    );
  }
  if (sockets.length === 1) {
    return sockets[0]!;
  }
  // Several daemons share /run (a lab): take the one in this network namespace.
  const netns = currentNetns();
  const here: string[] = [];
  await Promise.all(
    sockets.map(async (socket) => {
      const answer = await controlAsk(socket, { verb: 'identity' }, 1_000).catch(() => undefined);
      if (answer?.ok === true && answer.data.netns === netns) {
        here.push(socket);
      }
    }),
  );
  if (here.length === 1) {
    return here[0]!;
  }
  throw new NlbError(
    'bad-usage',
    here.length === 0
      ? `${sockets.length} nlbd sockets in ${runDirDefault}, none of a daemon in this network namespace: ${sockets.join(', ')}`
      : `${here.length} nlbd answer in this network namespace: ${here.join(', ')}`,
    'say which with --socket PATH, --config FILE, or --lab NAME --host ID',
    exitCodes.usage,
  );
}
