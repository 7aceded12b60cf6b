// The heartbeat: the one message of the protocol. Each host multicasts one per period (and at
// once when what it announces changes); from the last heartbeat of every peer any host can
// rebuild the cluster's state. The format is versioned binary, big-endian, authenticated with
// HMAC-SHA256 under the cluster key, and always fits one datagram.
//
// Layout (version 2):
//   0  magic "NLBH"            4   version u8           5   flags u8 (bit 0: settled, 1: kept out,
//                                                          2: rules carry held bitmaps)
//   6  host id u8              7   state u8
//   8  cluster id (8 bytes: SHA-256 of the cluster name)
//  16  incarnation u64 (below 2^53)                      24  sequence u32
//  28  config digest (16 bytes: the cluster part's digest)
//  44  heartbeat period ms u16 46  tolerance u8         47  cluster mode u8
//  48  hash seed u32          52  heard u32 bitmap     56  members u32 bitmap
//  60  map digest (8 bytes)   68  rule count u8        69  generation u32
//  73  ack count u8, then per ack: host id u8, incarnation u64, sequence u32 (the last heartbeat
//      received from that process: a report says which of each peer's heartbeats it was made
//      after, and a heartbeat that acks its receiver's recent one proves it is not a replay)
//  ..  per rule: buckets u16, rule digest u32, load weight u8, handling priority u8,
//      rule state u8, owned bitmap (ceil(buckets / 8) bytes, bucket b = bit b % 8 of byte b / 8),
//      then with flag bit 2 (routed mode) the held bitmap, of the same size
//  end: HMAC-SHA256 (32 bytes) over everything before it.
// Host bitmaps: bit (id - 1) stands for host id.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { ClusterMode, Config } from './config.js';
import { clusterDigest } from './config.js';
import { decodeRules, ruleStateByte, writeBitmap } from './heartbeat-rules.js';
import {
  acksMax,
  datagramBytesMax,
  heartbeatAckBytes,
  heartbeatBytes,
  heartbeatHeaderBytes,
  heartbeatRuleHeaderBytes,
  hmacBytes,
} from './heartbeat-size.js';

export { datagramBytesMax, heartbeatBytes } from './heartbeat-size.js';

export const heartbeatVersion = 2;
/** Where the sender's host id is in a datagram (the layout above). */
export const heartbeatHostIdOffset = 6;
const magic = [0x4e, 0x4c, 0x42, 0x48]; // "NLBH"

export type AnnouncedState = 'started' | 'draining' | 'stopped' | 'suspended';
const announcedStates: readonly AnnouncedState[] = ['started', 'draining', 'stopped', 'suspended'];
export type RuleState = 'enabled' | 'draining' | 'disabled';
const clusterModes: readonly ClusterMode[] = ['unicast', 'multicast', 'igmp', 'routed'];

export interface HeartbeatRule {
  readonly buckets: number;
  /** First 4 bytes of the rule's identity digest: names which rule differs on a mismatch. */
  readonly ruleDigest: number;
  readonly loadWeight: number;
  readonly handlingPriority: number;
  readonly state: RuleState;
  /**
   * The sender's service for this rule passes its health check (always true without one). An
   * unhealthy host yields the rule's buckets as a draining one does, unless every host is
   * unhealthy (fail open). Carried in the top bit of the state byte.
   */
  readonly healthy: boolean;
  /** Buckets the sender accepts new flows for (sorted ascending). */
  readonly owned: readonly number[];
  /**
   * Routed mode: buckets the sender released that may still hold its connections (sorted
   * ascending). A bucket leaves the list once the sender counted no connection left in it; the
   * host that took it over then ends that bucket's second chance (routed-forward.ts). Absent in
   * the other modes.
   */
  readonly held?: readonly number[];
}

/** The flags bit that says each rule carries its held bitmap (routed mode). */
const heldFlag = 4;

export interface Heartbeat {
  readonly hostId: number;
  readonly state: AnnouncedState;
  /** The sender owns exactly its share of the target map it announces. */
  readonly settled: boolean;
  /**
   * The sender found another host already using its id and keeps itself out: peers log it and
   * otherwise ignore the message (it must not pass for a restart of the real host).
   */
  readonly keptOut: boolean;
  readonly clusterId: Uint8Array;
  readonly incarnation: number;
  readonly sequence: number;
  /**
   * Grows each time the sender starts taking part again (start, resume, admitted). Map digests
   * cover every member's incarnation and generation, so a report made before a host left and
   * came back can never pass for agreement with its return.
   */
  readonly generation: number;
  readonly configDigest: Uint8Array;
  readonly periodMs: number;
  readonly tolerance: number;
  readonly mode: ClusterMode;
  readonly hashSeed: number;
  /** Host ids the sender hears (valid heartbeats within the tolerance window). */
  readonly heard: readonly number[];
  /** The sender's membership view, itself included when it takes part. */
  readonly members: readonly number[];
  readonly mapDigest: Uint8Array;
  /**
   * For each process heard, the last sequence received from it, sorted by host id, then
   * incarnation: normally one per host id; two when two hosts use one id (under the sender's
   * own id, the other one).
   */
  readonly acks: readonly HeartbeatAck[];
  readonly rules: readonly HeartbeatRule[];
}

export interface HeartbeatAck {
  readonly host: number;
  readonly incarnation: number;
  readonly sequence: number;
}

/**
 * Whether two heartbeats of one process announce the same thing: every field but the sequence
 * and the acked sequences (which move on with every heartbeat). A host that receives one equal
 * to the sender's previous heartbeat, while converged, has nothing to decide again (host.ts).
 */
export function sameAnnouncement(a: Heartbeat, b: Heartbeat): boolean {
  return (
    a.hostId === b.hostId &&
    a.incarnation === b.incarnation &&
    a.state === b.state &&
    a.settled === b.settled &&
    a.keptOut === b.keptOut &&
    a.generation === b.generation &&
    a.periodMs === b.periodMs &&
    a.tolerance === b.tolerance &&
    a.mode === b.mode &&
    a.hashSeed === b.hashSeed &&
    sameBytes(a.clusterId, b.clusterId) &&
    sameBytes(a.configDigest, b.configDigest) &&
    sameBytes(a.mapDigest, b.mapDigest) &&
    sameNumbers(a.heard, b.heard) &&
    sameNumbers(a.members, b.members) &&
    a.acks.length === b.acks.length &&
    a.acks.every(
      (ack, i) => ack.host === b.acks[i]!.host && ack.incarnation === b.acks[i]!.incarnation,
    ) &&
    a.rules.length === b.rules.length &&
    a.rules.every((rule, i) => sameRule(rule, b.rules[i]!))
  );
}

function sameRule(a: HeartbeatRule, b: HeartbeatRule): boolean {
  return (
    a.buckets === b.buckets &&
    a.ruleDigest === b.ruleDigest &&
    a.loadWeight === b.loadWeight &&
    a.handlingPriority === b.handlingPriority &&
    a.state === b.state &&
    a.healthy === b.healthy &&
    sameNumbers(a.owned, b.owned) &&
    (a.held === undefined
      ? b.held === undefined
      : b.held !== undefined && sameNumbers(a.held, b.held))
  );
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/** The ack a heartbeat carries for process (host, incarnation), if any. */
export function ackFor(
  heartbeat: Heartbeat,
  host: number,
  incarnation: number,
): number | undefined {
  return heartbeat.acks.find((a) => a.host === host && a.incarnation === incarnation)?.sequence;
}

export type DecodeFailure =
  | 'truncated'
  | 'bad magic'
  | 'unknown version'
  | 'other cluster'
  | 'bad authentication'
  | 'replayed or stale'
  | 'unproven'
  | 'malformed field';

export const decodeFailures: readonly DecodeFailure[] = [
  'truncated',
  'bad magic',
  'unknown version',
  'other cluster',
  'bad authentication',
  'replayed or stale',
  'unproven',
  'malformed field',
];

export type DecodeResult =
  | { readonly ok: true; readonly heartbeat: Heartbeat }
  | { readonly ok: false; readonly reason: DecodeFailure };

export function clusterIdOf(name: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`nlb-cluster:${name}`).digest()).subarray(0, 8);
}

/** The 16 digest bytes heartbeats carry: enough to tell configurations apart. */
export function configDigestOf(config: Config): Uint8Array {
  return clusterDigest(config.cluster).subarray(0, 16);
}

export function hostBitmap(ids: readonly number[]): number {
  let bits = 0;
  for (const id of ids) {
    bits = (bits | (1 << (id - 1))) >>> 0;
  }
  return bits;
}

export function hostsOfBitmap(bits: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < 32; i++) {
    if ((bits >>> i) & 1) {
      ids.push(i + 1);
    }
  }
  return ids;
}

function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', key).update(data).digest());
}

export function encodeHeartbeat(heartbeat: Heartbeat, key: Uint8Array): Uint8Array {
  if (heartbeat.acks.length > acksMax) {
    throw new Error(`heartbeat: ${heartbeat.acks.length} acks, at most ${acksMax}`);
  }
  const withHeld = heartbeat.rules.some((rule) => rule.held !== undefined);
  const size = heartbeatBytes(
    heartbeat.rules.map((r) => r.buckets),
    heartbeat.acks.length,
    withHeld,
  );
  if (size > datagramBytesMax) {
    throw new Error(
      `heartbeat of ${size} bytes exceeds ${datagramBytesMax}; config validation should have refused it`,
    );
  }
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  bytes.set(magic, 0);
  view.setUint8(4, heartbeatVersion);
  view.setUint8(
    5,
    (heartbeat.settled ? 1 : 0) | (heartbeat.keptOut ? 2 : 0) | (withHeld ? heldFlag : 0),
  );
  view.setUint8(6, heartbeat.hostId);
  view.setUint8(7, announcedStates.indexOf(heartbeat.state));
  bytes.set(heartbeat.clusterId.subarray(0, 8), 8);
  view.setUint32(16, Math.floor(heartbeat.incarnation / 0x1_0000_0000));
  view.setUint32(20, heartbeat.incarnation >>> 0);
  view.setUint32(24, heartbeat.sequence >>> 0);
  bytes.set(heartbeat.configDigest.subarray(0, 16), 28);
  view.setUint16(44, heartbeat.periodMs);
  view.setUint8(46, heartbeat.tolerance);
  view.setUint8(47, clusterModes.indexOf(heartbeat.mode));
  view.setUint32(48, heartbeat.hashSeed >>> 0);
  view.setUint32(52, hostBitmap(heartbeat.heard));
  view.setUint32(56, hostBitmap(heartbeat.members));
  bytes.set(heartbeat.mapDigest.subarray(0, 8), 60);
  view.setUint8(68, heartbeat.rules.length);
  view.setUint32(69, heartbeat.generation >>> 0);
  let offset = heartbeatHeaderBytes;
  view.setUint8(offset, heartbeat.acks.length);
  offset += 1;
  for (const ack of heartbeat.acks) {
    view.setUint8(offset, ack.host);
    view.setUint32(offset + 1, Math.floor(ack.incarnation / 0x1_0000_0000));
    view.setUint32(offset + 5, ack.incarnation >>> 0);
    view.setUint32(offset + 9, ack.sequence >>> 0);
    offset += heartbeatAckBytes;
  }
  for (const rule of heartbeat.rules) {
    view.setUint16(offset, rule.buckets);
    view.setUint32(offset + 2, rule.ruleDigest >>> 0);
    view.setUint8(offset + 6, rule.loadWeight);
    view.setUint8(offset + 7, rule.handlingPriority);
    view.setUint8(offset + 8, ruleStateByte(rule));
    offset += heartbeatRuleHeaderBytes;
    offset = writeBitmap(bytes, offset, rule.buckets, rule.owned);
    if (withHeld) offset = writeBitmap(bytes, offset, rule.buckets, rule.held ?? []);
  }
  bytes.set(hmac(key, bytes.subarray(0, offset)), offset);
  return bytes;
}

/**
 * Decodes and authenticates a datagram. Never throws: anything wrong comes back as a reason the
 * caller counts. Replay and staleness are the receiver's judgement (it knows the last sequence).
 */
export function decodeHeartbeat(
  bytes: Uint8Array,
  key: Uint8Array,
  clusterId: Uint8Array,
): DecodeResult {
  const frame = authenticate(bytes, key, clusterId);
  if (!frame.ok) return frame;
  const { view, ruleCount, ackCount, rulesOffset } = frame;
  const flags = view.getUint8(5);
  const hostId = view.getUint8(heartbeatHostIdOffset);
  const state = announcedStates[view.getUint8(7)];
  const incarnationHigh = view.getUint32(16);
  const mode = clusterModes[view.getUint8(47)];
  if (
    (flags & ~(3 | heldFlag)) !== 0 ||
    hostId < 1 ||
    hostId > 32 ||
    state === undefined ||
    mode === undefined ||
    incarnationHigh >= 0x20_0000 ||
    ruleCount > 32 ||
    ackCount > acksMax ||
    view.getUint16(44) < 1 ||
    view.getUint8(46) < 1
  ) {
    return malformed;
  }
  const acks = decodeAcks(view, ackCount);
  const rules = decodeRules(bytes, view, rulesOffset, ruleCount, (flags & heldFlag) !== 0);
  if (acks === undefined || rules === undefined) return malformed;
  return {
    ok: true,
    heartbeat: {
      hostId,
      state,
      settled: (flags & 1) === 1,
      keptOut: (flags & 2) === 2,
      clusterId: bytes.slice(8, 16),
      incarnation: incarnationHigh * 0x1_0000_0000 + view.getUint32(20),
      sequence: view.getUint32(24),
      generation: view.getUint32(69),
      configDigest: bytes.slice(28, 44),
      periodMs: view.getUint16(44),
      tolerance: view.getUint8(46),
      mode,
      hashSeed: view.getUint32(48),
      heard: hostsOfBitmap(view.getUint32(52)),
      members: hostsOfBitmap(view.getUint32(56)),
      mapDigest: bytes.slice(60, 68),
      acks,
      rules,
    },
  };
}

const malformed: Extract<DecodeResult, { ok: false }> = { ok: false, reason: 'malformed field' };

/** A datagram whose frame is whole and whose signature holds, with where its tables are. */
type Frame =
  | {
      readonly ok: true;
      readonly view: DataView;
      readonly ruleCount: number;
      readonly ackCount: number;
      readonly rulesOffset: number;
    }
  | Extract<DecodeResult, { ok: false }>;

/**
 * Checks the frame (magic, version, cluster, lengths) and the HMAC. Nothing past the cluster id
 * is trusted before the HMAC holds, except the counts that say where the HMAC is.
 */
function authenticate(bytes: Uint8Array, key: Uint8Array, clusterId: Uint8Array): Frame {
  if (bytes.length < heartbeatHeaderBytes + 1 + hmacBytes) {
    return { ok: false, reason: bytes.length >= 5 && !hasMagic(bytes) ? 'bad magic' : 'truncated' };
  }
  if (!hasMagic(bytes)) {
    return { ok: false, reason: 'bad magic' };
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(4) !== heartbeatVersion) {
    return { ok: false, reason: 'unknown version' };
  }
  for (let i = 0; i < 8; i++) {
    if (bytes[8 + i] !== clusterId[i]) {
      return { ok: false, reason: 'other cluster' };
    }
  }
  // Walk the rule table for its length before authenticating, so a short datagram is
  // 'truncated' rather than a bad signature; the walk reads only counts and is bounded.
  const ruleCount = view.getUint8(68);
  const bitmaps = (view.getUint8(5) & heldFlag) !== 0 ? 2 : 1;
  const ackCount = view.getUint8(heartbeatHeaderBytes);
  let offset = heartbeatHeaderBytes + 1 + ackCount * heartbeatAckBytes;
  const rulesOffset = offset;
  for (let r = 0; r < ruleCount; r++) {
    if (offset + heartbeatRuleHeaderBytes > bytes.length) {
      return { ok: false, reason: 'truncated' };
    }
    offset += heartbeatRuleHeaderBytes + bitmaps * Math.ceil(view.getUint16(offset) / 8);
  }
  if (offset + hmacBytes > bytes.length) {
    return { ok: false, reason: 'truncated' };
  }
  if (offset + hmacBytes < bytes.length) {
    return malformed;
  }
  const expected = hmac(key, bytes.subarray(0, offset));
  if (!timingSafeEqual(expected, bytes.subarray(offset, offset + hmacBytes))) {
    return { ok: false, reason: 'bad authentication' };
  }
  return { ok: true, view, ruleCount, ackCount, rulesOffset };
}

/** The acks, or undefined if one is malformed or they are not in strictly ascending order. */
function decodeAcks(view: DataView, ackCount: number): HeartbeatAck[] | undefined {
  const acks: HeartbeatAck[] = [];
  for (let a = 0; a < ackCount; a++) {
    const at = heartbeatHeaderBytes + 1 + a * heartbeatAckBytes;
    const host = view.getUint8(at);
    const high = view.getUint32(at + 1);
    const incarnation = high * 0x1_0000_0000 + view.getUint32(at + 5);
    const previous = acks[acks.length - 1];
    if (
      host < 1 ||
      host > 32 ||
      high >= 0x20_0000 ||
      (previous !== undefined &&
        (host < previous.host || (host === previous.host && incarnation <= previous.incarnation)))
    ) {
      return undefined;
    }
    acks.push({ host, incarnation, sequence: view.getUint32(at + 9) });
  }
  return acks;
}

function hasMagic(bytes: Uint8Array): boolean {
  return magic.every((byte, i) => bytes[i] === byte);
}
