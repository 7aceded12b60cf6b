// Actions from the page: the control token field, the confirmation every action asks for (a
// dialog naming the action and the host), and the message that says how it went. Nothing is
// sent before the confirmation, and nothing runs on the server without the right token.
import type { ActionAnswer, ActionRequest } from '../dashboard/view.js';

export function describeAction(action: ActionRequest): { title: string; text: string } {
  const host = `host ${action.host}`;
  switch (action.action) {
    case 'drainstop':
      return {
        title: `Drainstop ${host}?`,
        text: `${host} takes no new connections; its open connections finish, then it stops. Its buckets move to the other hosts now.`,
      };
    case 'stop':
      return {
        title: `Stop ${host}?`,
        text: `${host} stops taking part at once and its buckets move to the other hosts.`,
      };
    case 'start':
      return {
        title: `Start ${host}?`,
        text: `${host} takes part again and gets its share of the buckets.`,
      };
    case 'drain':
      return action.everyHost === true
        ? {
            title: `Drain rule ${action.rule} on every host?`,
            text: `Rule ${action.rule} takes no new connections on any host; open ones finish.`,
          }
        : {
            title: `Drain rule ${action.rule} on ${host}?`,
            text: `Rule ${action.rule} takes no new connections on ${host}; open ones finish.`,
          };
  }
}

export function TokenField(props: {
  token: string;
  hint: string;
  onInput: (token: string) => void;
}) {
  // A form of its own (never submitted) so the browser treats it as the password field it is.
  return (
    <form class="token" onSubmit={(e) => e.preventDefault()}>
      <label for="token">Control token</label>
      <input
        type="password"
        id="token"
        data-testid="token"
        autocomplete="off"
        placeholder="needed for actions"
        value={props.token}
        onInput={(e) => props.onInput((e.currentTarget as HTMLInputElement).value)}
      />
      <small>{props.hint}</small>
    </form>
  );
}

export function ConfirmDialog(props: {
  action: ActionRequest;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const { title, text } = describeAction(props.action);
  return (
    <div class="overlay">
      <div
        class="dialog"
        role="dialog"
        aria-modal="true"
        aria-labelledby="confirm-title"
        data-testid="confirm-dialog"
        data-action={props.action.action}
        data-host={props.action.host}
      >
        <h2 id="confirm-title">{title}</h2>
        <p>{text}</p>
        <div class="buttons">
          <button type="button" data-testid="confirm-cancel" onClick={props.onCancel}>
            Cancel
          </button>
          <button type="button" class="danger" data-testid="confirm-ok" onClick={props.onConfirm}>
            {describeAction(props.action).title.replace(/\?$/, '')}
          </button>
        </div>
      </div>
    </div>
  );
}

export interface Message {
  readonly ok: boolean;
  readonly text: string;
}

/** What the page says after an action: each host's reply, or why nothing was done. */
export function answerMessage(action: ActionRequest, answer: ActionAnswer): Message {
  const { title } = describeAction(action);
  const what = title.replace(/\?$/, '');
  if (!answer.ok) {
    return {
      ok: false,
      text: `${what}: ${answer.error}${answer.hint === '' ? '' : ` (${answer.hint})`}`,
    };
  }
  const replies = answer.results.map((r) => `host ${r.hostId}: ${r.code}, ${r.message}`);
  return { ok: answer.results.every((r) => r.ok), text: `${what}: ${replies.join('; ')}` };
}

export function MessageBar(props: { message: Message | null; onClose: () => void }) {
  if (props.message === null) return null;
  return (
    <div
      class={props.message.ok ? 'message ok' : 'message error'}
      role={props.message.ok ? 'status' : 'alert'}
      data-testid="action-message"
      data-ok={String(props.message.ok)}
    >
      <span>{props.message.text}</span>
      <button type="button" class="close" aria-label="dismiss" onClick={props.onClose}>
        ×
      </button>
    </div>
  );
}
