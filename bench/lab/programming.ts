// Decision → kernel programmed (issue 11 item 3), from every nlbd log of the bench's labs: the
// distribution, where the time went, and the verdicts. The 3-host labs are judged on the target;
// the 32-host lab, where 32 daemons and the kernel share two cores, is summarised and judged on
// its own beside them, so that neither hides the other.
import { histogram } from './figures.js';
import type { LabReport, Target } from './report.js';
import { fmt, maxOf, type ProgramSample, quantile } from './support.js';

/** One lab's samples; `hosts` 3 when not said. */
export interface ProgramEntry {
  readonly lab: string;
  readonly hosts?: number;
  readonly samples: ProgramSample[];
  readonly driver: unknown;
}

export type ProgrammingSummary = LabReport['programming'];

/** `overMs`: the bound every sample is held to (`overTarget` counts those above it). */
export function summarizeProgramming(
  program: readonly ProgramEntry[],
  overMs: number,
): ProgrammingSummary {
  const all = program.flatMap((p) => p.samples);
  const samples = all.map((s) => s.programMs);
  return {
    samples: samples.length,
    bySets: all.filter((s) => s.how === 'sets').length,
    byTable: all.filter((s) => s.how === 'table').length,
    p50Ms: quantile(samples, 0.5),
    p90Ms: quantile(samples, 0.9),
    p99Ms: quantile(samples, 0.99),
    maxMs: maxOf(samples),
    overTarget: samples.filter((ms) => ms > overMs).length,
    overTargetMs: overMs,
    histogram: histogram(samples),
    parts: (['inputWaitMs', 'waitMs', 'kernelMs'] as const).map((part) => {
      const values = all.flatMap((s) => (s[part] === undefined ? [] : [s[part]]));
      return {
        part,
        p50Ms: quantile(values, 0.5),
        p99Ms: quantile(values, 0.99),
        maxMs: maxOf(values),
      };
    }),
    slowest: program
      .flatMap((p) => p.samples.map((x) => ({ lab: p.lab, ...x })))
      .sort((a, b) => b.programMs - a.programMs)
      .slice(0, 5),
    perLab: program.map((p) => ({
      lab: p.lab,
      samples: p.samples.length,
      maxMs: maxOf(p.samples.map((s) => s.programMs)),
      driver: p.driver,
    })),
  };
}

function distribution(g: ProgrammingSummary, withP99: boolean): string {
  return g.samples === 0
    ? 'no samples'
    : `p50 ${fmt(g.p50Ms)} ms, p90 ${fmt(g.p90Ms)} ms${withP99 ? `, p99 ${fmt(g.p99Ms)} ms` : ''}, max ${fmt(g.maxMs)} ms over ${g.samples} changes`;
}

/** p99 and every sample, in the 3-host labs; the p99 at scale when a larger lab ran. */
export function judgeProgramming(
  programming: ProgrammingSummary,
  atScale: ProgrammingSummary | null,
  p99MsMax: number,
  everyMsMax: number,
): Target[] {
  const targets: Target[] = [
    {
      id: 'kernel-programming-p99',
      target: `decision → kernel programmed: p99 ≤ ${p99MsMax} ms (the 3-host labs)`,
      pass: programming.samples > 0 && (programming.p99Ms ?? Infinity) <= p99MsMax,
      measured: distribution(programming, true),
    },
    {
      id: 'kernel-programming',
      target: `decision → kernel programmed ≤ ${everyMsMax} ms (every sample, the 3-host labs)`,
      pass: programming.samples > 0 && (programming.maxMs ?? Infinity) <= everyMsMax,
      measured: distribution(programming, false),
    },
  ];
  if (atScale !== null) {
    targets.push({
      id: 'kernel-programming-p99-scale',
      target: `decision → kernel programmed: p99 ≤ ${p99MsMax} ms (the 32-host lab)`,
      pass: atScale.samples > 0 && (atScale.p99Ms ?? Infinity) <= p99MsMax,
      measured: distribution(atScale, true),
    });
  }
  return targets;
}

/** The distribution of `g`, where its time went, and its labs, under a heading naming `title`. */
export function renderProgramming(g: ProgrammingSummary, title: string): string[] {
  return [
    `## Decision → kernel programmed: the ${title}`,
    '',
    'From every nlbd log over the labs above (`ownership programmed`, `programMs`: from the',
    'moment the protocol core decided a new ownership until the kernel holds it; set updates through',
    'the long-lived `nft` process, or a whole-table load). The 3-host labs are judged on the target;',
    "the 32-host lab's changes, where 32 daemons and their nft processes share two cores, beside them.",
    '',
    `${g.samples} changes (${g.bySets} set updates, ${g.byTable} table loads): p50 ${fmt(g.p50Ms, 2)} ms, p90 ${fmt(g.p90Ms, 2)} ms, p99 ${fmt(g.p99Ms, 2)} ms, max ${fmt(g.maxMs, 2)} ms; ${g.overTarget} above ${g.overTargetMs} ms.`,
    `Slowest: ${g.slowest.map((x) => `${fmt(x.programMs, 2)} ms (${x.lab} h${x.hostId}, ${x.how})`).join(', ')}.`,
    '',
    '| ≤ 1 ms | 1-2 | 2-3 | 3-5 | 5-10 | 10-20 | > 20 |',
    '|---|---|---|---|---|---|---|',
    `| ${g.histogram.map((b) => b.count).join(' | ')} |`,
    '',
    'Where the time went (nlbd logs it per change): the input waiting in the queue before the',
    'decision, the wait behind other nft work (a check, a counter read), the nft transaction.',
    '',
    '| part | p50 (ms) | p99 (ms) | max (ms) |',
    '|---|---|---|---|',
    ...g.parts.map(
      (x) => `| ${x.part} | ${fmt(x.p50Ms, 2)} | ${fmt(x.p99Ms, 2)} | ${fmt(x.maxMs, 2)} |`,
    ),
    '',
    '| lab | changes | max (ms) |',
    '|---|---|---|',
    ...g.perLab.map((l) => `| ${l.lab} | ${l.samples} | ${fmt(l.maxMs, 2)} |`),
    '',
  ];
}
