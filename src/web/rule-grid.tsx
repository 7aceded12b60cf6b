// Per port rule, the bucket map as a grid: one cell per bucket, coloured by its owner, buckets in
// flight hatched, the connections in each as a number, and the cells the hosts disagree on
// outlined in red. Each cell carries its facts as data attributes (data-owner, data-inflight...)
// for people's tools and the browser tests alike.
import { useState } from 'preact/hooks';
import type { ActionRequest, BucketCell, HostView, RuleView } from '../dashboard/view.js';
import { hostColor } from './colors.js';
import { Swatch } from './hosts-panel.js';

function cellTitle(rule: RuleView, cell: BucketCell): string {
  const lines = [
    `rule ${rule.rule} bucket ${cell.bucket}`,
    `owner: ${cell.owner === null ? 'nobody' : `host ${cell.owner}`}`,
    `claimed by: ${cell.claims.length === 0 ? 'nobody' : cell.claims.join(', ')}`,
  ];
  if (cell.inFlight) lines.push('in flight: moving to its owner');
  if (cell.connections !== null) {
    const byHost = Object.entries(cell.connectionsByHost).map(([h, n]) => `host ${h}: ${n}`);
    lines.push(
      `connections: ${cell.connections}${byHost.length > 0 ? ` (${byHost.join(', ')})` : ''}`,
    );
  }
  if (cell.disagreement !== null) lines.push(`disagreement: ${cell.disagreement}`);
  return lines.join('\n');
}

function Cell(props: { rule: RuleView; cell: BucketCell }) {
  const { cell } = props;
  const classes = ['cell'];
  if (cell.inFlight) classes.push('inflight');
  if (cell.disagreement !== null) classes.push('disagree');
  return (
    <div
      class={classes.join(' ')}
      data-testid="bucket"
      data-rule={props.rule.rule}
      data-bucket={cell.bucket}
      data-owner={cell.owner ?? 'none'}
      data-claims={cell.claims.join(',')}
      data-inflight={String(cell.inFlight)}
      data-connections={cell.connections ?? ''}
      data-disagreement={String(cell.disagreement !== null)}
      style={{ backgroundColor: hostColor(cell.owner) }}
      title={cellTitle(props.rule, cell)}
    >
      <span class="bucket">{cell.bucket}</span>
      <span class="conns">
        {cell.connections === null || cell.connections === 0 ? '' : cell.connections}
      </span>
    </div>
  );
}

function DrainControl(props: {
  rule: RuleView;
  hosts: readonly HostView[];
  onDrain: (action: ActionRequest) => void;
}) {
  const reachable = props.hosts.filter((h) => h.reachable);
  const [target, setTarget] = useState('every');
  const first = reachable[0];
  if (first === undefined) return null;
  const drain = (): void =>
    props.onDrain(
      target === 'every'
        ? { action: 'drain', host: first.hostId, rule: props.rule.rule, everyHost: true }
        : { action: 'drain', host: Number(target), rule: props.rule.rule },
    );
  return (
    <span class="drain">
      <select
        data-testid="drain-target"
        data-rule={props.rule.rule}
        value={target}
        onChange={(e) => setTarget((e.currentTarget as HTMLSelectElement).value)}
      >
        <option value="every">every host</option>
        {reachable.map((h) => (
          <option key={h.hostId} value={String(h.hostId)}>
            host {h.hostId}
          </option>
        ))}
      </select>
      <button type="button" data-testid="action-drain" data-rule={props.rule.rule} onClick={drain}>
        drain rule {props.rule.rule}
      </button>
    </span>
  );
}

export function RuleGrid(props: {
  rule: RuleView;
  hosts: readonly HostView[];
  onDrain: (action: ActionRequest) => void;
}) {
  const { rule } = props;
  const owners = Object.entries(rule.owners);
  const inFlight = rule.cells.filter((c) => c.inFlight).length;
  return (
    <section class="panel rule" data-testid="rule" data-rule={rule.rule}>
      <h2>
        Rule {rule.rule}: {rule.vip}:{rule.ports} {rule.protocol}, {rule.mode}, affinity{' '}
        {rule.affinity}
      </h2>
      <div class="rule-facts">
        <span>{rule.buckets} buckets</span>
        {owners.map(([host, count]) => (
          <span key={host} class="owner-count" data-host={host}>
            <Swatch hostId={Number(host)} /> host {host}: {count}
          </span>
        ))}
        {inFlight > 0 ? <span class="badge converging">{inFlight} in flight</span> : null}
        {Object.entries(rule.states)
          .filter(([, state]) => state !== 'enabled')
          .map(([host, state]) => (
            <span key={host} class="badge draining">
              {state} on host {host}
            </span>
          ))}
        <DrainControl rule={rule} hosts={props.hosts} onDrain={props.onDrain} />
      </div>
      <div class="grid">
        {rule.cells.map((cell) => (
          <Cell key={cell.bucket} rule={rule} cell={cell} />
        ))}
      </div>
    </section>
  );
}
