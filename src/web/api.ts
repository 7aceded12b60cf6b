// The page's two ways to the server: the stream of views it is pushed (server-sent events, the
// browser reconnecting by itself), and the actions it posts with the control token.
import { useEffect, useState } from 'preact/hooks';
import {
  type ActionAnswer,
  type ActionRequest,
  type DashboardView,
  snapshotEventName,
  tokenHeader,
} from '../dashboard/view.js';

export interface Stream {
  readonly view: DashboardView | null;
  /** The stream is open (false while the browser reconnects). */
  readonly live: boolean;
}

export function useDashboardStream(): Stream {
  const [view, setView] = useState<DashboardView | null>(null);
  const [live, setLive] = useState(false);
  useEffect(() => {
    const source = new EventSource('/api/stream');
    source.addEventListener(snapshotEventName, (event) => {
      setView(JSON.parse((event as MessageEvent<string>).data) as DashboardView);
      setLive(true);
    });
    source.addEventListener('open', () => setLive(true));
    source.addEventListener('error', () => setLive(false));
    return () => source.close();
  }, []);
  return { view, live };
}

/** Posts one action; every failure (HTTP or network) is an answer, never a throw. */
export async function postAction(token: string, action: ActionRequest): Promise<ActionAnswer> {
  try {
    const response = await fetch('/api/action', {
      method: 'POST',
      headers: { 'content-type': 'application/json', [tokenHeader]: `Bearer ${token}` },
      body: JSON.stringify(action),
    });
    const answer = (await response.json()) as ActionAnswer;
    return answer;
  } catch (error) {
    return {
      ok: false,
      error: `the dashboard's server did not answer: ${String(error)}`,
      hint: 'is nlb dashboard still running?',
    };
  }
}
