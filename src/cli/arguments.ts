// Parsers for values verbs share (addresses, ports, host ids, the config file). Each throws an
// `NlbError` that names the argument as the user wrote it and says what to write instead, so
// every bad argument exits with code 2 and the same kind of message.
import { type Address, parseAddress } from '../core/address.js';
import { type Config, hostsMax } from '../core/config.js';
import { loadConfigFile } from '../node/config-file.js';
import { badArgument, badConfig } from './errors.js';

export function parseAddressArgument(argument: string, value: string, example: string): Address {
  const address = parseAddress(value.trim());
  if (address === undefined) {
    throw badArgument(
      argument,
      `'${value}' is not an IPv4 or IPv6 address`,
      `write a dotted-decimal IPv4 or an IPv6 address, e.g. ${example}`,
    );
  }
  return address;
}

export function parsePortArgument(argument: string, value: string): number {
  const text = value.trim();
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    throw badArgument(argument, `'${value}' is not a port`, 'give a number from 0 to 65535');
  }
  return Number(text);
}

export function parseHostIdArgument(argument: string, value: string): number {
  const text = value.trim();
  if (!/^\d{1,2}$/.test(text) || Number(text) < 1 || Number(text) > hostsMax) {
    throw badArgument(
      argument,
      `'${value}' is not a host id`,
      `host ids are whole numbers from 1 to ${hostsMax}`,
    );
  }
  return Number(text);
}

/** A comma-separated list of distinct host ids, e.g. `1,2,3`. */
export function parseHostIdsArgument(argument: string, value: string): number[] {
  const ids = value.split(',').map((part) => parseHostIdArgument(argument, part));
  const duplicate = ids.find((id, i) => ids.indexOf(id) !== i);
  if (duplicate !== undefined) {
    throw badArgument(argument, `host ${duplicate} is listed twice`, 'list each host id once');
  }
  return ids;
}

/** Loads the config named by `--config`; any problem is exit code 2 listing every error. */
export async function loadConfigArgument(path: string): Promise<Config> {
  const result = await loadConfigFile(path);
  if (!result.ok) {
    throw badConfig(
      result.message,
      result.reason === 'unreadable'
        ? '--config takes the path of the host config YAML, e.g. examples/web/host1.yaml'
        : 'fix the keys listed; the files in examples/ show every key with comments',
    );
  }
  return result.config;
}
