// nlbd's metrics, loaded when first wanted: prom-client, the metric definitions and node's
// default collectors (about 2 MB of heap, bench/results/footprint.md) come with the first
// `metrics` control verb, or at start with `--metrics-listen`, not in every nlbd whether or not
// anything ever scrapes it. metrics.ts is imported only dynamically, so the bundle evaluates it
// (and prom-client) only then.
import type http from 'node:http';
import type { ControlTarget } from './control.js';
import type { Metrics } from './metrics.js';

export interface LazyMetrics {
  /** The exposition text and its content type; the first call loads the metrics. */
  read(): Promise<{ contentType: string; text: string }>;
  /** Loads the metrics and serves them over HTTP (metrics.ts, listenMetrics). */
  listen(address: string, port: number): Promise<http.Server>;
}

export function lazyMetrics(target: ControlTarget): LazyMetrics {
  let loading: Promise<{ metrics: Metrics; module: typeof import('./metrics.js') }> | undefined;
  const load = (): NonNullable<typeof loading> =>
    (loading ??= import('./metrics.js').then((module) => ({
      metrics: module.createMetrics(target),
      module,
    })));
  return {
    read: async () => {
      const { metrics } = await load();
      return { contentType: metrics.contentType, text: await metrics.text() };
    },
    listen: async (address, port) => {
      const { metrics, module } = await load();
      return module.listenMetrics(metrics, address, port);
    },
  };
}
