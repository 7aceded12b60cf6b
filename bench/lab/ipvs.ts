// Kernel layer-4 directors in front of the lab's three backends, for the requests/s comparison
// (issue 11 item 8): the kernel's IP Virtual Server driven by ipvsadm, and, beside it, the same
// job done by nftables NAT.
//
// Where. The director is a lab "client" namespace used as the proxy machine, on the lab's switch
// like haproxy, but a namespace of its own (c3): IPVS takes a virtual service's packets in
// LOCAL_IN, before any socket, so a service on haproxy's address and port 80 would silently take
// haproxy's traffic. Virtual service: the director's own lab address, TCP port 80, round robin
// over the hosts' dedicated IPs, port 80.
//
// How replies come back. Director, client and backends share one subnet, so in plain NAT
// ("masquerading", -m) mode a backend would answer the client directly, from its own address,
// and the client would reset the connection. Direct routing would need the director's address
// on every backend (and ARP suppressed there), which the lab's hosts do not have. So this is
// "full NAT" in the director's namespace only: IPVS masquerading rewrites the destination, and an
// nftables masquerade rule in the director's postrouting rewrites the source to the director, so
// the backends answer the director. That needs net.ipv4.vs.conntrack=1 (IPVS keeps its
// connections in conntrack, where nftables NAT can see them) and net.ipv4.ip_forward=1 (the
// replies, once conntrack has undone the source NAT, are forwarded back to the client, where
// IPVS undoes its own NAT). All of it lives in the director's namespace and goes with the lab;
// nothing touches the root namespace or the hosts.
//
// Not every kernel has IPVS (CONFIG_IP_VS): `ipvsadm -Ln` in the director's namespace says, and
// then IPVS is reported as not measured, with the reason. The nftables director runs in either
// case, on port 81 of the same address: DNAT round robin (`numgen inc mod 3`) plus the same
// masquerade, the way kube-proxy's nftables mode balances. It is a kernel NAT director without
// IPVS's connection table and schedulers, reported beside IPVS, never in its place.
import { assertLabSafeAddress } from '../../src/lab/naming.js';
import type { LabState } from '../../src/lab/lab.js';
import { execNs, execNsChecked } from './ns-exec.js';

export type DirectorKind = 'ipvs' | 'nft-dnat';

/** The port each director listens on, on the director's own address. */
export const directorPorts: Readonly<Record<DirectorKind, number>> = {
  ipvs: 80,
  'nft-dnat': 81,
};

/** The backends' port (the lab backend's). */
const backendPort = 80;
/** A command of the set-up or teardown is a few syscalls; a stuck one must not hang the bench. */
const commandTimeoutMs = 5_000;
/** The nftables table the directors add in the director's namespace (and only there). */
const nftTable = 'nlb_bench_director';

export interface DirectorStatus {
  readonly kind: DirectorKind;
  readonly available: boolean;
  /** ipvsadm's or nft's version line, or why the director could not run. */
  readonly detail: string;
  /** The director's address:port, where the client sends its requests. */
  readonly address: string;
}

export interface Directors {
  readonly statuses: DirectorStatus[];
  /** Directors that are up and serving. */
  readonly ready: DirectorKind[];
  /** Removes every director's state from the namespace; safe to call twice. */
  stop(): Promise<void>;
}

/** The nftables table: masquerade toward the backends, plus the DNAT director's round robin. */
export function directorNftScript(
  directorIp: string,
  backends: readonly string[],
  withDnat: boolean,
): string {
  const set = backends.join(', ');
  const map = backends.map((ip, i) => `${i} : ${ip}`).join(', ');
  return [
    `table ip ${nftTable} {`,
    ...(withDnat
      ? [
          '  chain balance {',
          '    type nat hook prerouting priority dstnat; policy accept;',
          `    ip daddr ${directorIp} tcp dport ${directorPorts['nft-dnat']} dnat to numgen inc mod ${backends.length} map { ${map} }:${backendPort}`,
          '  }',
        ]
      : []),
    '  chain masquerade_to_backends {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip daddr { ${set} } tcp dport ${backendPort} masquerade`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Why IPVS cannot run in `target`, or undefined when it can. */
async function ipvsProblem(lab: LabState, target: string): Promise<string | undefined> {
  const out = await execNs(lab, target, ['ipvsadm', '-Ln'], commandTimeoutMs);
  if (out.code === 0) return undefined;
  if (out.code === -1 && /ENOENT/.test(out.stderr)) return 'ipvsadm is not installed';
  const text = `${out.stderr} ${out.stdout}`.trim().replace(/\s+/g, ' ');
  return /Protocol not available|built in the kernel/.test(text)
    ? `this kernel has no IP Virtual Server (CONFIG_IP_VS): ${text}`
    : `ipvsadm -Ln failed (exit ${out.code}): ${text}`;
}

async function sysctls(lab: LabState, target: string, settings: readonly string[]): Promise<void> {
  for (const setting of settings) {
    await execNsChecked(lab, target, ['sysctl', '-q', '-w', setting], commandTimeoutMs);
  }
}

async function startIpvs(
  lab: LabState,
  target: string,
  directorIp: string,
  backends: readonly string[],
): Promise<void> {
  await sysctls(lab, target, ['net.ipv4.vs.conntrack=1']);
  const service = `${directorIp}:${directorPorts.ipvs}`;
  await execNsChecked(lab, target, ['ipvsadm', '-A', '-t', service, '-s', 'rr'], commandTimeoutMs);
  for (const ip of backends) {
    await execNsChecked(
      lab,
      target,
      ['ipvsadm', '-a', '-t', service, '-r', `${ip}:${backendPort}`, '-m'],
      commandTimeoutMs,
    );
  }
}

/**
 * Sets up both directors in `target` (a lab client namespace) in front of `backends`. A director
 * that cannot run is reported in `statuses` with the reason; one that fails half-way is taken
 * down again before this throws.
 */
export async function startDirectors(
  lab: LabState,
  target: string,
  directorIp: string,
  backends: readonly string[],
): Promise<Directors> {
  assertLabSafeAddress(directorIp, 'director address');
  for (const ip of backends) assertLabSafeAddress(ip, 'director backend');
  let ipvsUp = false;
  let nftUp = false;
  const stop = async (): Promise<void> => {
    // Each step on its own: a failed one must not leave the others' state behind.
    if (ipvsUp) await execNs(lab, target, ['ipvsadm', '-C'], commandTimeoutMs);
    if (nftUp) {
      await execNs(lab, target, ['nft', 'delete', 'table', 'ip', nftTable], commandTimeoutMs);
    }
    ipvsUp = false;
    nftUp = false;
  };
  try {
    // Forwarding carries the replies back to the client once conntrack has undone the source
    // NAT; redirects would only tell the backends about a shorter path they must not take.
    await sysctls(lab, target, [
      'net.ipv4.ip_forward=1',
      'net.ipv4.conf.all.send_redirects=0',
      'net.ipv4.conf.eth0.send_redirects=0',
    ]);
    const nftVersion = (await execNsChecked(lab, target, ['nft', '-v'], commandTimeoutMs)).trim();
    nftUp = true;
    await execNsChecked(
      lab,
      target,
      ['nft', '-f', '-'],
      commandTimeoutMs,
      directorNftScript(directorIp, backends, true),
    );
    const problem = await ipvsProblem(lab, target);
    let ipvsDetail = problem ?? '';
    if (problem === undefined) {
      ipvsUp = true;
      await startIpvs(lab, target, directorIp, backends);
      const version = await execNs(lab, target, ['ipvsadm', '-V'], commandTimeoutMs);
      ipvsDetail = version.stdout.trim() || 'ipvsadm';
    }
    const address = (kind: DirectorKind): string => `${directorIp}:${directorPorts[kind]}`;
    const statuses: DirectorStatus[] = [
      { kind: 'ipvs', available: ipvsUp, detail: ipvsDetail, address: address('ipvs') },
      { kind: 'nft-dnat', available: true, detail: nftVersion, address: address('nft-dnat') },
    ];
    return { statuses, ready: statuses.filter((s) => s.available).map((s) => s.kind), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
