// The actions the page may ask for (drainstop, start, stop a host; drain a port rule on a host
// or on every host), each behind the control token: the token is checked first, in constant
// time, and a request without it, or with another, runs nothing. Wrong tokens are limited per
// window, so the page's server cannot be used to guess one.
import { createHash, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { RuleCommandReply } from '../control/protocol.js';
import type { CommandReply } from '../core/protocol.js';
import { errorText } from '../core/error-text.js';
import type { DashboardHost } from './hosts.js';
import type { ActionAnswer, ActionRequest, ActionResult } from './view.js';

/** Wrong or missing tokens accepted per window before every action is refused for its rest. */
export const badTokensMax = 10;
export const badTokenWindowMs = 60_000;
/** A command is one message to nlbd and one decision; 5 s is a host that does not answer. */
export const actionTimeoutMs = 5_000;

const actionSchema = z
  .object({
    action: z.enum(['drainstop', 'start', 'stop', 'drain']),
    host: z.number().int().min(1).max(32),
    rule: z.number().int().min(0).max(255).optional(),
    everyHost: z.boolean().optional(),
  })
  .strict()
  .refine((a) => (a.action === 'drain') === (a.rule !== undefined), {
    message: 'drain takes a "rule", and the other actions none',
  })
  .refine((a) => a.action === 'drain' || a.everyHost !== true, {
    message: 'only drain may be asked of every host',
  });

/** An HTTP status and the answer to send with it. */
export interface ActionOutcome {
  readonly status: 200 | 400 | 401 | 404 | 429;
  readonly answer: ActionAnswer;
}

function refused(status: ActionOutcome['status'], error: string, hint: string): ActionOutcome {
  return { status, answer: { ok: false, error, hint } };
}

/** Compares two tokens in time that depends on neither (both hashed to the same length first). */
export function tokensEqual(given: string, expected: string): boolean {
  const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

/** Checks the token and the request, then runs the action; the token check comes first. */
export class ActionGate {
  private badTokens: number[] = [];

  constructor(
    private readonly token: string,
    private readonly tokenHint: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether `given` may act: null when it may, else the refusal (401 or 429). */
  check(given: string | undefined): ActionOutcome | null {
    const now = this.now();
    this.badTokens = this.badTokens.filter((at) => now - at < badTokenWindowMs);
    if (this.badTokens.length >= badTokensMax) {
      return refused(
        429,
        `${badTokensMax} wrong control tokens in the last ${badTokenWindowMs / 1000} s: actions are refused for a while; nothing was done`,
        'wait a minute, then give the right token',
      );
    }
    if (given === undefined || given === '') {
      this.badTokens.push(now);
      return refused(401, 'no control token given: nothing was done', this.tokenHint);
    }
    if (!tokensEqual(given, this.token)) {
      this.badTokens.push(now);
      return refused(401, 'wrong control token: nothing was done', this.tokenHint);
    }
    return null;
  }

  /** Parses and runs one action for a caller whose token `check` accepted. */
  async run(
    body: unknown,
    hostOf: (hostId: number) => DashboardHost | undefined,
    allHosts: readonly DashboardHost[],
  ): Promise<ActionOutcome> {
    const parsed = actionSchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return refused(
        400,
        `bad action: ${issue?.path.join('.') || 'request'}: ${issue?.message ?? 'invalid'}`,
        'send e.g. {"action":"drainstop","host":2} or {"action":"drain","host":1,"rule":0}',
      );
    }
    const action: ActionRequest = parsed.data;
    const host = hostOf(action.host);
    if (host === undefined) {
      return refused(
        404,
        `host ${action.host} is not a host of this cluster`,
        'pick a host the page lists',
      );
    }
    const targets = action.everyHost === true ? allHosts : [host];
    const results = await Promise.all(targets.map((t) => runOn(t, action)));
    return { status: 200, answer: { ok: true, results } };
  }
}

async function runOn(host: DashboardHost, action: ActionRequest): Promise<ActionResult> {
  if (host.unreachable !== null) {
    return { hostId: host.hostId, ok: false, code: 'unreachable', message: host.unreachable };
  }
  try {
    const response =
      action.action === 'drain'
        ? await host.ask({ verb: 'drain', rules: [action.rule!] }, actionTimeoutMs)
        : await host.ask({ verb: action.action }, actionTimeoutMs);
    if (!response.ok) {
      return {
        hostId: host.hostId,
        ok: false,
        code: response.error.code,
        message: response.error.message,
      };
    }
    const reply: CommandReply | RuleCommandReply = response.data;
    return {
      hostId: host.hostId,
      ok: reply.code === 'ok' || reply.code === 'already',
      code: reply.code,
      message: reply.message,
    };
  } catch (error) {
    return { hostId: host.hostId, ok: false, code: 'unreachable', message: errorText(error) };
  }
}
