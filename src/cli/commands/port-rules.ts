// The verbs that act on port rules, named by the traffic they carry (nlb.exe's syntax):
//   nlb enable|disable|drain <vip:port | vip:all | all:port | all:all>
//   nlb queryport <vip:port>
// enable: take new flows again; disable: drop the rule's traffic, its existing connections
// too; drain: no new flows on this host, existing connections go on. The spec is checked here
// (bad syntax: exit 2) and resolved to rules by nlbd against the config it runs
// (src/control/rule-spec.ts); no rule for it: exit 4. enable/disable/drain take --cluster: every
// host of the cluster at once (cluster-verbs.ts), each asked by the same `ruleOn`.
import type { Command } from 'commander';
import { type Ask, asker } from '../cluster.js';
import type { QueryportData, QueryportRule } from '../../control/protocol.js';
import { parseRuleSpec, ruleSpecExamples } from '../../control/rule-spec.js';
import { NlbError, badArgument } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliCommand, CliContext } from '../program.js';
import {
  type CommandOutput,
  type VerbOutput,
  fields,
  renderHuman,
  table,
  text,
} from '../render.js';
import { type ClusterOptions, addClusterOption, clusterHelp, onCluster } from './cluster-verbs.js';
import {
  type ControlOptions,
  addDaemonOptions,
  askLink,
  daemonOptionsHelp,
  replyExitCode,
  resolveDaemon,
  throwIfFailed,
} from './control.js';
import { bucketRanges } from './query.js';

type RuleVerb = 'enable' | 'disable' | 'drain';

function checkSpec(argument: string, value: string): string {
  const spec = parseRuleSpec(value);
  if ('error' in spec) {
    throw badArgument(argument, spec.error, `write it as one of ${ruleSpecExamples}`);
  }
  return value.trim();
}

export interface RuleCommandData {
  readonly verb: RuleVerb;
  readonly spec: string;
  readonly code: 'ok' | 'already';
  readonly message: string;
  readonly rules: readonly number[];
}

/** One host's rule verb on a checked spec; throws what a failed reply stands for. */
export async function ruleOn(
  ask: Ask,
  verb: RuleVerb,
  spec: string,
): Promise<CommandOutput<RuleCommandData>> {
  const reply = await ask({ verb, spec });
  throwIfFailed(reply, `${verb} ${spec}`);
  const data: RuleCommandData = {
    verb,
    spec,
    code: reply.code,
    message: reply.message,
    rules: reply.rules,
  };
  return {
    data,
    human: text(
      `${verb} ${spec} (rule${reply.rules.length === 1 ? '' : 's'} ${reply.rules.join(', ')}): ${reply.message}`,
    ),
    exitCode: replyExitCode(reply.code),
  };
}

export async function ruleCommand(
  verb: RuleVerb,
  specText: string,
  options: ClusterOptions,
): Promise<VerbOutput> {
  const spec = checkSpec('<vip:port>', specText);
  if (options.cluster === true) {
    return onCluster(options, `${verb} ${spec}`, (ask) => ruleOn(ask, verb, spec));
  }
  return ruleOn(asker(await resolveDaemon(options)), verb, spec);
}

const descriptions: Record<RuleVerb, string> = {
  enable: 'enable the port rule(s) that carry this traffic: take new flows again',
  disable:
    'disable the port rule(s): this host drops their traffic, its existing connections included',
  drain: 'drain the port rule(s): no new flows on this host, existing connections go on',
};

function ruleVerb(verb: RuleVerb): CliCommand {
  return {
    register(program: Command, ctx: CliContext): void {
      addClusterOption(
        addDaemonOptions(
          program
            .command(verb)
            .description(descriptions[verb])
            .argument('<vip:port>', 'vip:port, vip:all, all:port or all:all'),
        ),
      )
        .addHelpText(
          'after',
          '\nvip:port names the rule that takes that traffic (TCP and UDP); all:port every rule\n' +
            "covering the port; vip:all the rules of that cluster IP (the 'all' rules when it has\n" +
            `none of its own); all:all every rule.\n${daemonOptionsHelp}\nExamples:\n` +
            `  nlb ${verb} 198.18.0.100:80\n  nlb ${verb} all:all --lab demo --host 2\n` +
            clusterHelp([
              `nlb ${verb} 198.18.0.100:80 --cluster --lab demo`,
              `nlb ${verb} all:all --cluster --token-file /etc/nlb/control.token`,
            ]),
        )
        .action(
          ctx.action((spec: string, options: ClusterOptions) => ruleCommand(verb, spec, options)),
        );
    },
  };
}

export const enable = ruleVerb('enable');
export const disable = ruleVerb('disable');
export const drain = ruleVerb('drain');

// ------------------------------------------------------------------------------- queryport

function ownerText(owner: number | null): string {
  return owner === null ? '-' : String(owner);
}

/** What the hosts' claims say against the target: all agree, in flight, or a disagreement. */
function claimsText(rule: QueryportRule): string {
  const list = (pick: (b: QueryportRule['buckets'][number]) => boolean): string =>
    bucketRanges(rule.buckets.filter(pick).map((b) => b.bucket));
  if (rule.disagreements > 0) {
    return `DISAGREEMENT in ${rule.disagreements} bucket(s): ${list((b) => b.disagreement)}`;
  }
  const moving = rule.buckets.filter((b) => b.inFlight).length;
  return moving === 0
    ? 'every bucket claimed by its owner alone'
    : `${moving} bucket(s) in flight (converging): ${list((b) => b.inFlight)}`;
}

function renderRule(rule: QueryportRule, hostId: number): string {
  const summary = renderHuman(
    fields([
      [
        'rule',
        `${rule.rule}: ${rule.vip}:${rule.ports} ${rule.protocol}, ${rule.mode}, affinity ${rule.affinity}`,
      ],
      ['state', rule.state],
      ['owned here', `${rule.ownedHere}/${rule.buckets.length} buckets (host ${hostId})`],
      ['connections', rule.connections === null ? 'unknown' : String(rule.connections)],
      ['claims', claimsText(rule)],
      [
        'health',
        rule.health.check === null && rule.health.healthy
          ? 'no check'
          : `${rule.health.healthy ? 'ok' : 'UNHEALTHY'}${rule.health.failingOpen ? ' (every host is: failing open)' : ''}; ${rule.health.check ?? ''}${rule.health.last === null ? '' : `; last: ${rule.health.last.detail}`}`,
      ],
    ]),
  );
  const byOwner = new Map<string, number[]>();
  for (const bucket of rule.buckets) {
    const key = ownerText(bucket.owner);
    byOwner.set(key, [...(byOwner.get(key) ?? []), bucket.bucket]);
  }
  const owners = renderHuman(
    table<[string, number[]]>(
      [
        { header: 'owner', cell: ([owner]) => owner, align: 'right' },
        { header: 'count', cell: ([, buckets]) => String(buckets.length), align: 'right' },
        { header: 'buckets', cell: ([, buckets]) => bucketRanges(buckets) },
      ],
      [...byOwner].sort(([a], [b]) => Number(a) - Number(b)),
    ),
  );
  const buckets = renderHuman(
    table(
      [
        { header: 'bucket', cell: (b) => String(b.bucket), align: 'right' },
        { header: 'owner', cell: (b) => ownerText(b.owner), align: 'right' },
        {
          header: 'here',
          cell: (b) => (b.orphan ? 'orphan' : b.ownedHere ? 'yes' : '-'),
        },
        {
          header: 'claimed by',
          cell: (b) =>
            `${b.claimedBy.join(',') || 'nobody'}${b.disagreement ? ' DISAGREE' : b.inFlight ? ' (in flight)' : ''}`,
        },
        {
          header: 'connections',
          cell: (b) => (b.connections === null ? '?' : String(b.connections)),
          align: 'right',
        },
      ],
      rule.buckets,
    ),
  );
  return `${summary}\n${owners}\n${buckets}`;
}

export async function queryport(
  specText: string,
  options: ControlOptions,
): Promise<CommandOutput<QueryportData>> {
  const spec = checkSpec('<vip:port>', specText);
  const link = await resolveDaemon(options);
  const data = await askLink(link, { verb: 'queryport', spec });
  if (data.code === 'not found') {
    throw new NlbError(
      'port-in-no-rule',
      `queryport ${spec}: ${data.message}`,
      'see the port rules with `nlb display`',
      exitCodes.portInNoRule,
    );
  }
  const notes = [
    data.converged
      ? ''
      : 'note: the cluster is converging; owners are the map this host works towards, claims what each host takes now',
    data.connectionsError === null ? '' : `note: connections unknown: ${data.connectionsError}`,
  ].filter((line) => line !== '');
  const body = data.rules.map((rule) => renderRule(rule, data.hostId)).join('\n');
  return { data, human: text(notes.length === 0 ? body : `${body}\n${notes.join('\n')}`) };
}

export const queryportVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(
      program
        .command('queryport')
        .description(
          'show the port rule that takes vip:port: its state, the owner of every bucket and the connections this host holds in each',
        )
        .argument('<vip:port>', 'e.g. 198.18.0.100:80'),
    )
      .addHelpText(
        'after',
        `${daemonOptionsHelp}\nExit code 4 when no port rule covers the port.\nExample:\n  nlb queryport 198.18.0.100:80\n`,
      )
      .action(ctx.action((spec: string, options: ControlOptions) => queryport(spec, options)));
  },
};
