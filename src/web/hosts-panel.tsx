// Every host: its state and health as it says and as its peers see it, its counters, and the
// buttons for its actions (each asks for confirmation first).
import type { ActionName, HostView } from '../dashboard/view.js';
import { hostColor } from './colors.js';
import { bytes, compact, hostsText } from './format.js';

export function Swatch(props: { hostId: number | null }) {
  return <span class="swatch" style={{ background: hostColor(props.hostId) }} />;
}

function seenAsText(host: HostView): string {
  const entries = Object.entries(host.seenAs);
  return entries.length === 0 ? '' : entries.map(([by, view]) => `${by}: ${view}`).join(', ');
}

function Counters(props: { host: HostView }) {
  const c = props.host.counters;
  if (c === null) return <td class="num">-</td>;
  const rate = c.packetsPerSecond === null ? '' : ` (${compact(c.packetsPerSecond)}/s)`;
  return (
    <td class="num" data-testid="host-packets" title={`${c.droppedPackets} packets dropped`}>
      {compact(c.acceptedPackets)}
      {rate}
      <br />
      <small>
        {bytes(c.acceptedBytes)}
        {c.bytesPerSecond === null ? '' : ` (${bytes(c.bytesPerSecond)}/s)`}
      </small>
    </td>
  );
}

const hostActions: readonly ActionName[] = ['drainstop', 'stop', 'start'];

function HostRow(props: { host: HostView; onAction: (action: ActionName, host: number) => void }) {
  const { host } = props;
  return (
    <tr
      data-testid="host"
      data-host={host.hostId}
      data-health={host.health}
      data-state={host.state ?? 'unknown'}
      class={`health-${host.health}`}
    >
      <td>
        <Swatch hostId={host.hostId} /> {host.hostId}
      </td>
      <td>{host.state ?? '-'}</td>
      <td>
        <span class={`badge ${host.health}`}>{host.health}</span>
        <div class="why">{host.healthText}</div>
      </td>
      <td>{host.members === null ? '-' : hostsText(host.members)}</td>
      <td class="muted">{seenAsText(host)}</td>
      <td class="num">{host.connections ?? '-'}</td>
      <Counters host={host} />
      <td class="muted where">{host.where ?? '-'}</td>
      <td class="actions">
        {hostActions.map((action) => (
          <button
            key={action}
            type="button"
            data-testid={`action-${action}`}
            data-host={host.hostId}
            disabled={!host.reachable}
            onClick={() => props.onAction(action, host.hostId)}
          >
            {action}
          </button>
        ))}
      </td>
    </tr>
  );
}

export function HostsPanel(props: {
  hosts: readonly HostView[];
  onAction: (action: ActionName, host: number) => void;
}) {
  return (
    <section class="panel">
      <h2>Hosts</h2>
      <table class="hosts">
        <thead>
          <tr>
            <th>host</th>
            <th>state</th>
            <th>health</th>
            <th>members</th>
            <th>seen by peers as</th>
            <th class="num">connections</th>
            <th class="num">accepted packets</th>
            <th>nlbd at</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {props.hosts.map((host) => (
            <HostRow key={host.hostId} host={host} onAction={props.onAction} />
          ))}
        </tbody>
      </table>
    </section>
  );
}
