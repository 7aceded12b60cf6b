// Hosts for the dashboard's tests without a daemon: each answers with the daemon's own control
// handlers over a test target (test/control-target.ts: a real HostMachine stepped by hand, its
// journal, fake counters and connections), in process, and can be made unreachable.
import type { FollowHandlers } from '../src/control/client.js';
import { ControlUnreachable } from '../src/control/client.js';
import type { ControlResponse, RequestOf, Verb, VerbData } from '../src/control/protocol.js';
import type { HostAnswers } from '../src/dashboard/build-view.js';
import type { DashboardHost } from '../src/dashboard/hosts.js';
import { answerControl } from '../src/daemon/control.js';
import { type TestTarget, makeTestTarget, testConfig } from './control-target.js';

export interface FakeHost {
  readonly host: DashboardHost;
  readonly target: TestTarget;
  /** Set to make every request fail as an nlbd that does not answer. */
  down: boolean;
}

/** A host `hostId` (2..32: host 1 is the stopped peer every test target hears). */
export function fakeHost(hostId: number): FakeHost {
  const target = makeTestTarget({ config: testConfig(hostId) });
  const where = `/run/nlb/nlbd-test-${hostId}.sock`;
  const fake: FakeHost = {
    target,
    down: false,
    host: {
      hostId,
      where,
      unreachable: null,
      ask: async <V extends Verb>(request: RequestOf<V>) => {
        if (fake.down) throw new ControlUnreachable(where, 'ECONNREFUSED');
        const answer = await answerControl(request, target.context);
        return answer.response as ControlResponse<VerbData[V]>;
      },
      follow: (request: RequestOf<'events'>, handlers: FollowHandlers, signal: AbortSignal) =>
        follow(fake, request, handlers, signal),
    },
  };
  return fake;
}

async function follow(
  fake: FakeHost,
  request: RequestOf<'events'>,
  handlers: FollowHandlers,
  signal: AbortSignal,
): Promise<'closed' | 'aborted'> {
  if (fake.down) throw new ControlUnreachable(fake.host.where!, 'ECONNREFUSED');
  const answer = await answerControl({ ...request, follow: true }, fake.target.context);
  const response = answer.response as ControlResponse<VerbData['events']>;
  if (!handlers.onResponse(response) || answer.stream === undefined) {
    answer.stream?.close();
    return 'closed';
  }
  return new Promise((resolve) => {
    answer.stream!.attach((entry) => {
      handlers.onLine(entry);
      return true;
    });
    signal.addEventListener(
      'abort',
      () => {
        answer.stream!.close();
        resolve('aborted');
      },
      { once: true },
    );
  });
}

/** What a fake host answers to the four verbs of one gather. */
export async function answersOf(fake: FakeHost): Promise<HostAnswers> {
  const ask = async <V extends Verb>(request: RequestOf<V>): Promise<VerbData[V]> => {
    const response = await fake.host.ask(request, 1_000);
    if (!response.ok) throw new Error(response.error.message);
    return response.data;
  };
  return {
    hostId: fake.host.hostId,
    where: fake.host.where,
    error: null,
    query: await ask({ verb: 'query' }),
    map: await ask({ verb: 'map' }),
    queryport: await ask({ verb: 'queryport', spec: 'all:all' }),
    params: await ask({ verb: 'params' }),
  };
}
