// The conntrack mark layout. Every flow the filter accepts as new gets a ct mark that says which
// port rule and which bucket let it in, so the daemon can count connections per bucket and drop
// the connections of given buckets (`conntrack -D --mark`) without keeping any table of its own:
//
//   bit  31      1 = the flow was accepted by nlb (0 = anything else, e.g. older than nlb)
//   bits 24..30  0 (reserved)
//   bits 16..23  port rule index (0..31, config order), or 0xff for traffic no rule covers
//                that the default host took
//   bits  0..15  bucket (0..1023 today; 16 bits leave room)
//
// Example: rule 1, bucket 5 -> 0x80010005.

import { bucketsMax, portRulesMax } from '../core/config.js';

export const nlbMarkBit = 0x8000_0000;
export const ruleShift = 16;
export const ruleFieldMask = 0x00ff_0000;
export const bucketFieldMask = 0x0000_ffff;
/** The rule field of flows to a VIP that no port rule covers (accepted by the default host). */
export const uncoveredRule = 0xff;

export type MarkRule = number | 'uncovered';

function ruleField(rule: MarkRule): number {
  if (rule === 'uncovered') {
    return uncoveredRule;
  }
  if (!Number.isInteger(rule) || rule < 0 || rule >= portRulesMax) {
    throw new Error(`ct mark: rule index ${rule} is not 0..${portRulesMax - 1}`);
  }
  return rule;
}

/** The ct mark of a flow accepted by `rule` in `bucket`. */
export function ctMark(rule: MarkRule, bucket: number): number {
  if (!Number.isInteger(bucket) || bucket < 0 || bucket >= bucketsMax) {
    throw new Error(`ct mark: bucket ${bucket} is not 0..${bucketsMax - 1}`);
  }
  return (nlbMarkBit | (ruleField(rule) << ruleShift) | bucket) >>> 0;
}

/** The value OR-ed onto the bucket in the filter: the nlb bit and the rule field. */
export function ctMarkBase(rule: MarkRule): number {
  return (nlbMarkBit | (ruleField(rule) << ruleShift)) >>> 0;
}

export interface DecodedMark {
  readonly rule: MarkRule;
  readonly bucket: number;
}

/** The rule and bucket a ct mark names, or undefined when nlb did not set it. */
export function decodeCtMark(mark: number): DecodedMark | undefined {
  if (((mark >>> 0) & nlbMarkBit) === 0 || ((mark >>> 0) & 0x7f00_0000) !== 0) {
    return undefined;
  }
  const field = ((mark >>> 0) & ruleFieldMask) >>> ruleShift;
  return { rule: field === uncoveredRule ? 'uncovered' : field, bucket: mark & bucketFieldMask };
}

/** `0x8001000a`-style text, the form `conntrack --mark` and nft both accept. */
export function formatMark(mark: number): string {
  return `0x${(mark >>> 0).toString(16).padStart(8, '0')}`;
}
