// The control protocol's view of the port rules' health checks (issue 14): what `query`,
// `queryport` and `params` report of each rule's checks. Part of protocol.ts, which re-exports it.

/** The last probe of a health or agent check. */
export interface ProbeView {
  readonly ok: boolean;
  /** `200 OK`, `exit 0`, `connected`, or why not: `ECONNREFUSED`, `timed out after 500 ms`. */
  readonly detail: string;
  readonly latencyMs: number;
  /** ISO time the probe ended. */
  readonly at: string;
}

/** A port rule's checks as nlbd runs them (src/daemon/health.ts). */
export interface RuleHealthView {
  readonly rule: number;
  /** `http 127.0.0.1:80/health every 1000 ms, ...`, or null without a health check. */
  readonly check: string | null;
  /** The checks' verdict (true without a check). */
  readonly healthy: boolean;
  /** Successes and failures in a row. */
  readonly successes: number;
  readonly failures: number;
  readonly last: ProbeView | null;
  readonly agent: {
    readonly check: string;
    /** The last weight read (before the filter), or null. */
    readonly reading: number | null;
    /** The weight reported to the host machine (after the filter), or null. */
    readonly inForce: number | null;
    readonly last: ProbeView | null;
  } | null;
}

/** A rule's health on this host, as `query` and `queryport` report it. */
export interface RuleHealth extends Omit<RuleHealthView, 'rule'> {
  /** Every host taking the rule is unhealthy: it serves as if all were healthy. */
  readonly failingOpen: boolean;
  /** The load weight the service reported and the host machine uses, or null (the config's). */
  readonly reportedWeight: number | null;
}
