// `nlb map`'s live source: the bucket map a running nlbd holds (the `map` verb), which is the
// cluster's own map with its history in it (minimal movement makes a map depend on the order
// hosts came and went, so a map planned from scratch for the same hosts differs from it).
//
// Which nlbd: the options of every control verb (control.ts); `--lab NAME` alone asks the
// lab's hosts in turn and takes the first that answers. The answer carries what a prediction
// needs of the config (cluster IPs, hash seed, port rules), so no config file is needed.
import { parseAddress, type Address } from '../../core/address.js';
import type { PortRule } from '../../core/config.js';
import type { BucketMaps, PredictionCluster } from '../../core/predict.js';
import type { MapData } from '../../control/protocol.js';
import { resolveCluster } from '../cluster.js';
import { NlbError } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import { type ControlOptions, askLink, resolveDaemon } from './control.js';

/** A live map and which nlbd gave it. */
export interface LiveMap {
  readonly data: MapData;
  /** The socket or address of the nlbd that answered. */
  readonly where: string;
}

/** Whether the options name a daemon explicitly (then failing to reach it is an error). */
export function namesDaemon(options: ControlOptions): boolean {
  return (
    options.socket !== undefined ||
    options.lab !== undefined ||
    options.host !== undefined ||
    options.tokenFile !== undefined
  );
}

/** Asks the named nlbd (or, with `--lab` alone, the lab's hosts in turn) for its map. */
export async function fetchLiveMap(options: ControlOptions): Promise<LiveMap> {
  if (options.lab !== undefined && options.host === undefined) {
    const links = await resolveCluster(options);
    const failures: string[] = [];
    for (const host of links.hosts) {
      if (host.link === null) continue;
      try {
        return { data: await askLink(host.link, { verb: 'map' }), where: host.link.where };
      } catch (error) {
        if (!(error instanceof NlbError)) throw error;
        failures.push(`host ${host.hostId}: ${error.message}`);
      }
    }
    throw new NlbError(
      'failed',
      `no nlbd of lab '${options.lab}' answers (${failures.join('; ') || 'no hosts'})`,
      'see `nlb lab status`; or predict from scratch with --config F --hosts 1,2,3',
      exitCodes.failed,
    );
  }
  const link = await resolveDaemon(options);
  return { data: await askLink(link, { verb: 'map' }), where: link.where };
}

function address(text: string, what: string): Address {
  const parsed = parseAddress(text);
  if (parsed === undefined) {
    throw new NlbError(
      'failed',
      `nlbd reported ${what} '${text}', which is not an address`,
      'is it an nlbd of the same version as this nlb?',
      exitCodes.failed,
    );
  }
  return parsed;
}

/** The config a prediction needs, from the live map. */
export function liveCluster(data: MapData): PredictionCluster {
  return {
    clusterIps: data.clusterIps.map((ip) => address(ip, 'a cluster IP')),
    hashSeed: data.hashSeed,
    portRules: data.rules.map((rule): PortRule => ({
      vip: rule.vip === 'all' ? 'all' : address(rule.vip, 'a port rule VIP'),
      portStart: rule.portStart,
      portEnd: rule.portEnd,
      protocol: rule.protocol,
      mode: rule.mode,
      affinity: rule.affinity,
      buckets: rule.buckets,
    })),
  };
}

/** The owners to predict with: the agreed (target) map the answering host works towards. */
export function liveMaps(data: MapData): BucketMaps {
  return { owners: data.rules.map((rule) => rule.owners), defaultHost: data.defaultHost };
}

/** `rule 0: 3, 7; rule 1: 12` for the buckets in flight, or undefined when none is. */
export function inFlightText(data: MapData): string | undefined {
  const parts = data.rules
    .filter((rule) => rule.inFlight.length > 0)
    .map((rule) => `rule ${rule.rule}: ${rule.inFlight.join(', ')}`);
  return parts.length === 0 ? undefined : parts.join('; ');
}
