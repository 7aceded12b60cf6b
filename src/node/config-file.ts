// Loading a host's config file from disk: the only I/O between a path and `parseConfig`.
// Failures are values (the CLI turns them into exit code 2, the daemon into a refusal to start),
// and the message names the file, every bad path in it, and what was expected there.
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  type Config,
  type ConfigError,
  type ConfigResult,
  formatConfigErrors,
  parseConfig,
} from '../core/config.js';

/** Where `command[0]` of an exec check runs from: itself with a slash, else the first in PATH. */
async function executable(name: string): Promise<string | undefined> {
  const candidates = name.includes('/')
    ? [name]
    : (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin')
        .split(':')
        .filter((dir) => dir !== '')
        .map((dir) => path.join(dir, name));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/** Every exec check's command must be a file this process may run (a fact of the machine). */
async function checkCommands(config: Config): Promise<ConfigResult> {
  const errors: ConfigError[] = [];
  for (const [i, rule] of config.cluster.portRules.entries()) {
    for (const kind of ['health', 'agent'] as const) {
      const probe = rule[kind]?.probe;
      if (probe?.type !== 'exec') continue;
      const name = probe.command[0]!;
      if ((await executable(name)) === undefined) {
        errors.push({
          path: `cluster.portRules[${i}].${kind}.command[0]`,
          value: name,
          message: name.includes('/')
            ? 'is not an executable file; give the full path of the check program and make it executable (chmod +x)'
            : "is not an executable in PATH; give the check program's full path",
        });
      }
    }
  }
  return errors.length === 0 ? { ok: true, config } : { ok: false, errors };
}

/**
 * A config is a few kilobytes; refusing anything over 1 MiB keeps a wrong path (a log, a disk
 * image) from being read into memory whole.
 */
export const configFileBytesMax = 1024 * 1024;

export type ConfigFileResult =
  | { readonly ok: true; readonly path: string; readonly config: Config }
  | {
      readonly ok: false;
      readonly path: string;
      /** `unreadable`: missing, not a file, too big; `invalid`: YAML or validation errors. */
      readonly reason: 'unreadable' | 'invalid';
      /** One or more lines, ready to show: the file, then one line per error. */
      readonly message: string;
      /** The validation errors; empty when the file could not be read. */
      readonly errors: readonly ConfigError[];
    };

function unreadable(path: string, why: string): ConfigFileResult {
  return {
    ok: false,
    path,
    reason: 'unreadable',
    message: `cannot read config file '${path}': ${why}`,
    errors: [],
  };
}

/** Reads and validates the YAML config at `path`. The key file it names is not read here. */
export async function loadConfigFile(path: string): Promise<ConfigFileResult> {
  let text: string;
  try {
    const info = await stat(path);
    if (!info.isFile()) {
      return unreadable(path, 'not a regular file');
    }
    if (info.size > configFileBytesMax) {
      return unreadable(path, `${info.size} bytes is over the ${configFileBytesMax}-byte limit`);
    }
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : error instanceof Error
            ? error.message
            : String(error);
    return unreadable(path, why);
  }
  const parsed = parseConfig(text);
  const result = parsed.ok ? await checkCommands(parsed.config) : parsed;
  if (!result.ok) {
    const lines = formatConfigErrors(result.errors)
      .split('\n')
      .map((line) => `  ${line}`)
      .join('\n');
    return {
      ok: false,
      path,
      reason: 'invalid',
      message: `config file '${path}' is invalid:\n${lines}`,
      errors: result.errors,
    };
  }
  return { ok: true, path, config: result.config };
}
