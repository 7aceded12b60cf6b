// The dashboard page: the cluster's state in one line, the disagreements if any, the hosts, one
// grid per port rule, the convergence timeline and the events. Everything comes from the
// server's stream; actions go through the confirmation dialog and the control token.
import { useState } from 'preact/hooks';
import type { ActionName, ActionRequest, DashboardView } from '../dashboard/view.js';
import {
  ConfirmDialog,
  type Message,
  MessageBar,
  TokenField,
  answerMessage,
  describeAction,
} from './actions.js';
import { postAction, useDashboardStream } from './api.js';
import { clock } from './format.js';
import { EventsPanel, Timeline } from './history.js';
import { HostsPanel } from './hosts-panel.js';
import { RuleGrid } from './rule-grid.js';

function Summary(props: { view: DashboardView; live: boolean }) {
  const { view } = props;
  const status =
    view.disagreements.length > 0 ? 'disagreement' : view.converged ? 'converged' : 'converging';
  return (
    <header class="summary">
      <h1>
        nlb cluster <span data-testid="cluster">{view.cluster}</span>
      </h1>
      <span class={`badge ${status}`} data-testid="cluster-status" data-status={status}>
        {status}
      </span>
      <span class="muted">
        map drawn from host {view.mapSource ?? '-'} · asked {clock(view.gatheredAt)}
      </span>
      <span
        class={props.live ? 'badge ok' : 'badge unreachable'}
        data-testid="stream-status"
        data-live={String(props.live)}
      >
        {props.live ? 'live' : 'reconnecting...'}
      </span>
    </header>
  );
}

function Disagreements(props: { view: DashboardView }) {
  if (props.view.disagreements.length === 0) return null;
  return (
    <div class="disagreements" role="alert" data-testid="disagreement">
      <strong>The hosts disagree on the map.</strong>
      <ul>
        {props.view.disagreements.map((d) => (
          <li key={d.text}>{d.text}</li>
        ))}
      </ul>
    </div>
  );
}

export function App() {
  const { view, live } = useDashboardStream();
  const [token, setToken] = useState('');
  const [pending, setPending] = useState<ActionRequest | null>(null);
  const [message, setMessage] = useState<Message | null>(null);
  if (view === null) {
    return <p class="loading">{live ? 'Waiting for the first view...' : 'Connecting...'}</p>;
  }
  const ask = (action: ActionRequest): void => {
    setMessage(null);
    setPending(action);
  };
  const confirm = async (): Promise<void> => {
    const action = pending;
    setPending(null);
    if (action === null) return;
    if (token.trim() === '') {
      const what = describeAction(action).title.replace(/\?$/, '');
      setMessage({
        ok: false,
        text: `${what}: no control token given: nothing was done (${view.tokenHint})`,
      });
      return;
    }
    setMessage(answerMessage(action, await postAction(token.trim(), action)));
  };
  const onHostAction = (action: ActionName, host: number): void => ask({ action, host });
  return (
    <div class="page" data-testid="dashboard" data-version={view.version}>
      <Summary view={view} live={live} />
      <TokenField token={token} hint={view.tokenHint} onInput={setToken} />
      <MessageBar message={message} onClose={() => setMessage(null)} />
      <Disagreements view={view} />
      <HostsPanel hosts={view.hosts} onAction={onHostAction} />
      {view.rules.length === 0 ? (
        <section class="panel">
          <h2>Bucket map</h2>
          <p class="muted">No host answers: there is no map to draw.</p>
        </section>
      ) : (
        view.rules.map((rule) => (
          <RuleGrid key={rule.rule} rule={rule} hosts={view.hosts} onDrain={ask} />
        ))
      )}
      <div class="columns">
        <Timeline timeline={view.timeline} />
        <EventsPanel events={view.events} />
      </div>
      {pending === null ? null : (
        <ConfirmDialog
          action={pending}
          onConfirm={() => void confirm()}
          onCancel={() => setPending(null)}
        />
      )}
    </div>
  );
}
