// `nlb frr-config --config F [--dir D]`: this host's FRR files for routed mode (zebra.conf,
// bfdd.conf, bgpd.conf; src/routed/frr-config.ts), from the config's `cluster.routed` and
// `host.routed` sections, printed or written to a directory. No daemon is involved: the files
// are a function of the config (docs/routed.md#frr-configuration).
import path from 'node:path';
import type { Command } from 'commander';
import { markerRouteProtocol } from '../../core/bgp.js';
import { writeFileAtomic } from '../../node/atomic-file.js';
import {
  describeFrrErrors,
  frrDaemons,
  frrFileName,
  renderHostFrr,
} from '../../routed/frr-config.js';
import { hostFrrSettingsOf } from '../../routed/host-settings.js';
import { loadConfigArgument } from '../arguments.js';
import { badConfig, NlbError } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliContext } from '../program.js';
import { type CommandOutput, type HumanView, fields } from '../render.js';

export interface FrrConfigData {
  /** The directory the files were written to, or null when they were only printed. */
  readonly dir: string | null;
  readonly files: ReadonlyArray<{
    readonly name: string;
    /** Where it was written, or null. */
    readonly path: string | null;
    readonly text: string;
  }>;
  /** The route that makes FRR announce a cluster IP, `<ip>` standing for it. */
  readonly markerRoute: string;
}

/**
 * The files hold no secret (no BGP password), and FRR's daemons read them after dropping root
 * for the `frr` user: readable by all, so they work wherever they are written.
 */
const fileMode = 0o644;
const dirMode = 0o755;

const markerRoute = `<cluster-ip>/32 dev lo proto ${markerRouteProtocol}`;

function human(data: FrrConfigData): HumanView {
  const notes = [
    `FRR announces a cluster IP while this host holds the route \`ip route add ${markerRoute}\` ` +
      '(and accepts its packets, e.g. `ip route add local <cluster-ip>/32 dev lo`); nlbd does not add it yet.',
  ];
  if (data.dir === null) {
    const text = data.files.map((f) => `! ---- ${f.name} ----\n${f.text}`).join('\n');
    return { kind: 'text', text: `${text}\n! ${notes.join(' ')}\n` };
  }
  return fields(
    data.files.map((f) => [f.name, f.path!] as const),
    [
      `start zebra, then bfdd, then bgpd, each with its file: /usr/lib/frr/<daemon> -d -f ${path.join(data.dir, '<daemon>.conf')}`,
      ...notes,
    ],
  );
}

export async function frrConfig(options: {
  readonly config: string;
  readonly dir?: string;
}): Promise<CommandOutput<FrrConfigData>> {
  const config = await loadConfigArgument(options.config);
  const settings = hostFrrSettingsOf(config);
  if (settings === undefined) {
    throw badConfig(
      `${options.config} has no routed mode settings (cluster.routed, host.routed)`,
      'add cluster.routed: { as: 65001 } and host.routed.peers: [{ address: <router>, as: <its AS> }] (docs/routed.md)',
    );
  }
  const result = renderHostFrr(settings);
  if (!result.ok) {
    // The config's checks passed, so a refusal here is a disagreement between the two: a bug.
    throw new NlbError(
      'internal',
      `the FRR settings from ${options.config} were refused:\n${describeFrrErrors(result.errors)}`,
      'report this as a bug',
      exitCodes.failed,
    );
  }
  const dir = options.dir === undefined ? null : path.resolve(options.dir);
  const files = frrDaemons.map((daemon) => {
    const name = frrFileName(daemon);
    const text = result.files[daemon];
    const file = dir === null ? null : path.join(dir, name);
    if (file !== null) writeFileAtomic(file, text, { mode: fileMode, dirMode });
    return { name, path: file, text };
  });
  const data: FrrConfigData = { dir, files, markerRoute };
  return { data, human: human(data) };
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('frr-config')
    .description("write this host's FRR files for routed mode (BGP + ECMP) from its config")
    .requiredOption('--config <file>', "the host's nlb config, with cluster.routed and host.routed")
    .option(
      '--dir <dir>',
      'write zebra.conf, bfdd.conf and bgpd.conf there instead of printing them',
    )
    .addHelpText(
      'after',
      '\nThe host announces each IPv4 cluster IP to its peers while it holds the marker route\n' +
        `${markerRoute}; timers 1 3, BFD 100 ms x 3 unless the config says otherwise.\n\n` +
        'Example:\n  nlb frr-config --config /etc/nlb/host1.yaml --dir /etc/frr/nlb\n',
    )
    .action(ctx.action((options: { config: string; dir?: string }) => frrConfig(options)));
}
