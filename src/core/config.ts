// The configuration model: one YAML document per host with a `cluster` part (identical on every
// host) and a `host` part. The schema is the single source of truth for defaults and limits;
// `parseConfig` turns untrusted text into a validated, normalised `Config` or a list of errors,
// each naming the path, the value found and what is expected. Nothing is half-accepted.
//
// The parts: the model, its limits and defaults (config-model.ts), the schema
// (config-schema.ts), the checks across fields (config-checks.ts) and the cluster's identity
// and digest (config-identity.ts). Everything is re-exported here, where the rest of nlb
// imports it from.
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { heartbeatSizeError, normalise } from './config-checks.js';
import type { ConfigError, ConfigResult } from './config-model.js';
import { checkSchema } from './config-schema.js';

export * from './config-identity.js';
export * from './config-model.js';

/** Validates an already-parsed document (e.g. from YAML or JSON). */
export function validateConfig(document: unknown): ConfigResult {
  const schema = checkSchema(document);
  if (!schema.ok) {
    return { ok: false, errors: schema.errors };
  }
  const errors: ConfigError[] = [];
  const config = normalise(schema.raw, errors);
  if (config === undefined) {
    return { ok: false, errors };
  }
  const tooBig = heartbeatSizeError(config);
  if (tooBig !== undefined) {
    return { ok: false, errors: [tooBig] };
  }
  return { ok: true, config };
}

/** Parses YAML text and validates it; YAML syntax errors come back as errors too. */
export function parseConfig(text: string): ConfigResult {
  let document: unknown;
  try {
    document = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (error) {
    const message = error instanceof YAMLParseError ? error.message : String(error);
    return { ok: false, errors: [{ path: '(yaml)', value: undefined, message }] };
  }
  return validateConfig(document);
}

export function formatConfigErrors(errors: readonly ConfigError[]): string {
  return errors
    .map((e) => {
      const shown = e.value === undefined ? '' : ` (found ${JSON.stringify(e.value)})`;
      return `${e.path}${shown}: ${e.message}`;
    })
    .join('\n');
}
