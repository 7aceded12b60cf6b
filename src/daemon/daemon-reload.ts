// `nlb reload` and SIGHUP: re-read the config file and the key, check what changed
// (control-reload.ts), and hand a valid change to the host machine, which applies it in one step
// (the driver's onReload switches the daemon's config in that same step). Anything wrong is an
// answer, never a throw: the running config stays.
import { type Config, clusterDigestHex, formatConfigErrors } from '../core/config.js';
import type { Command, CommandReply } from '../core/protocol.js';
import { loadConfigFile } from '../node/config-file.js';
import type { ReloadReply } from '../control/protocol.js';
import { checkReload } from './control-reload.js';
import type { EventSink } from './event-names.js';
import { readKeyFile } from './key-file.js';
import { type DaemonOptions, keyPathOf } from './start-checks.js';

export interface ReloadDeps {
  readonly options: DaemonOptions;
  /** The key nlbd started with: a changed key file is a change only a restart can make. */
  readonly key: Uint8Array;
  /** The running config (it changes with every successful reload). */
  readonly config: () => Config;
  readonly command: (command: Command) => Promise<CommandReply>;
  readonly log: EventSink;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function nothing(code: ReloadReply['code'], message: string): ReloadReply {
  return { code, message, errors: [], changes: [], clusterChanged: false };
}

/** The reload function the control target and SIGHUP call; one reload runs at a time. */
export function createReload(deps: ReloadDeps): () => Promise<ReloadReply> {
  let reloading = false;
  const reject = (reason: string, errors: readonly string[]): ReloadReply => {
    deps.log({ event: 'config rejected', reason, errors });
    return {
      code: 'invalid',
      message: `${reason}; the running config stays:\n${errors.map((e) => `  ${e}`).join('\n')}`,
      errors,
      changes: [],
      clusterChanged: false,
    };
  };
  return async () => {
    if (reloading) {
      return nothing('refused', 'a reload is already in progress; try again in a moment');
    }
    reloading = true;
    try {
      const { options } = deps;
      const config = deps.config();
      const loaded = await loadConfigFile(options.configPath);
      if (!loaded.ok) {
        return reject(
          `config file '${options.configPath}' is ${loaded.reason}`,
          loaded.reason === 'invalid'
            ? formatConfigErrors(loaded.errors).split('\n')
            : [loaded.message],
        );
      }
      const next = loaded.config;
      const keyPath = keyPathOf(options, next);
      let keyChanged = false;
      if (keyPath === keyPathOf(options, config)) {
        const nextKey = await readKeyFile(keyPath);
        if (!nextKey.ok) {
          return reject('the cluster key cannot be read', [`${nextKey.message} (${nextKey.hint})`]);
        }
        keyChanged = !sameBytes(nextKey.key, deps.key);
      }
      const check = checkReload(config, next, keyChanged);
      if (check.problems.length > 0) {
        return reject('the new config changes what only a restart can', check.problems);
      }
      if (check.changes.length === 0) {
        return nothing('already', 'the config file holds the running config: nothing to reload');
      }
      const clusterChanged = clusterDigestHex(next.cluster) !== clusterDigestHex(config.cluster);
      const reply = await deps.command({ verb: 'reload', config: next });
      return {
        code: reply.code === 'ok' ? 'ok' : reply.code === 'suspended' ? 'suspended' : 'refused',
        message: reply.message,
        errors: [],
        changes: reply.code === 'ok' ? check.changes : [],
        clusterChanged: reply.code === 'ok' && clusterChanged,
      };
    } finally {
      reloading = false;
    }
  };
}
