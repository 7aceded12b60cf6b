// Facts about this installation and process that the CLI and the daemon both report.
import { readFileSync, readlinkSync } from 'node:fs';

/**
 * The version in package.json. dist/<folder>/x.js and src/<folder>/x.ts both sit two levels
 * below it, in a clone and in an installed package alike.
 */
export function packageVersion(): string {
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/**
 * `net:[inode]` of this process's network namespace, which tells two namespaces apart;
 * undefined where /proc does not say.
 */
export function currentNetns(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return undefined;
  }
}
