// The convergence timeline (how long each took, how many buckets moved) and the event stream of
// every host, newest first.
import type { Convergence, DashboardEvent } from '../dashboard/view.js';
import { Swatch } from './hosts-panel.js';
import { clock, hostsText } from './format.js';

/** The timeline shows this many; the events panel that many. */
const convergencesShown = 20;
const eventsShown = 100;

function ConvergenceRow(props: { c: Convergence; longestMs: number }) {
  const { c } = props;
  const width = props.longestMs === 0 ? 0 : Math.max(2, (100 * c.durationMs) / props.longestMs);
  return (
    <tr data-testid="convergence" data-duration={c.durationMs} data-moved={c.bucketsMoved}>
      <td class="time">{clock(c.at)}</td>
      <td class="duration">
        <span class="bar" style={{ width: `${width}%` }} />
        <span class="num">{c.durationMs} ms</span>
      </td>
      <td class="num">{c.bucketsMoved}</td>
      <td>{hostsText(c.members)}</td>
      <td class="muted">{c.reasons.join('; ')}</td>
    </tr>
  );
}

export function Timeline(props: { timeline: readonly Convergence[] }) {
  const shown = props.timeline.slice(0, convergencesShown);
  const longestMs = Math.max(0, ...shown.map((c) => c.durationMs));
  return (
    <section class="panel">
      <h2>Convergences</h2>
      {shown.length === 0 ? (
        <p class="muted">none seen yet</p>
      ) : (
        <table class="timeline">
          <thead>
            <tr>
              <th>ended</th>
              <th>took (longest member)</th>
              <th class="num">buckets moved</th>
              <th>members</th>
              <th>why</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((c) => (
              <ConvergenceRow key={`${c.at}/${c.members.join()}`} c={c} longestMs={longestMs} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function EventsPanel(props: { events: readonly DashboardEvent[] }) {
  const shown = props.events.slice(0, eventsShown);
  return (
    <section class="panel">
      <h2>Events</h2>
      <div class="scroll">
        <table class="events">
          <tbody>
            {shown.map((e) => (
              <tr
                key={`${e.hostId}/${e.time}/${e.seq}`}
                data-testid="event"
                data-event={e.event}
                data-host={e.hostId}
                class={e.warn ? 'warn' : ''}
              >
                <td class="time">{clock(e.time)}</td>
                <td>
                  <Swatch hostId={e.hostId} /> {e.hostId}
                </td>
                <td class="event-name">{e.event}</td>
                <td class="muted details">{e.details}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
