// Loading a host's config file from disk: the only I/O between a path and `parseConfig`.
// Failures are values (the CLI turns them into exit code 2, the daemon into a refusal to start),
// and the message names the file, every bad path in it, and what was expected there.
import { readFile, stat } from 'node:fs/promises';
import { type Config, type ConfigError, formatConfigErrors, parseConfig } from '../core/config.js';

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
  const result = parseConfig(text);
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
