// `nlb reload`: nlbd re-reads its config file and applies a valid change atomically (the host
// machine takes the new config in one step; the kernel takes the new rules in one transaction;
// established connections stay). An invalid file, or one that changes what only a restart can
// (cluster IPs, interface, mode, key...), is rejected with every reason, and the running
// config stays. Exit codes: 0 reloaded, 3 nothing changed, 2 rejected, 1 suspended or failed.
import type { Command } from 'commander';
import type { ReloadReply } from '../../control/protocol.js';
import { NlbError } from '../errors.js';
import { exitCodes } from '../exit-codes.js';
import type { CliCommand, CliContext } from '../program.js';
import { type CommandOutput, text } from '../render.js';
import {
  type ControlOptions,
  addDaemonOptions,
  askLink,
  daemonOptionsHelp,
  resolveDaemon,
  throwIfFailed,
} from './control.js';

export async function reload(options: ControlOptions): Promise<CommandOutput<ReloadReply>> {
  const link = await resolveDaemon(options);
  const reply = await askLink(link, { verb: 'reload' });
  if (reply.code === 'invalid') {
    throw new NlbError(
      'bad-config',
      `reload rejected: ${reply.message}`,
      'fix the config file and run nlb reload again; nlbd keeps running the old config',
      exitCodes.usage,
    );
  }
  throwIfFailed(reply, 'reload');
  if (reply.code === 'already') {
    return {
      data: reply,
      human: text(`reload: ${reply.message}`),
      exitCode: exitCodes.alreadyInState,
    };
  }
  const lines = [
    `reload: ${reply.message}${reply.clusterChanged ? '; every host needs the same cluster part: reload the others too' : ''}`,
    ...reply.changes.map((change) => `  ${change}`),
  ];
  return { data: reply, human: text(lines.join('\n')) };
}

export const reloadVerb: CliCommand = {
  register(program: Command, ctx: CliContext): void {
    addDaemonOptions(
      program
        .command('reload')
        .description(
          'make nlbd re-read its config file: a valid change applies at once without breaking connections',
        ),
    )
      .addHelpText(
        'after',
        `${daemonOptionsHelp}\nA change to the cluster part must be made on every host (hosts whose cluster parts\n` +
          'differ keep each other out until they agree). Changing the cluster IPs, mode, interface,\n' +
          'heartbeat address, key, host id or dedicated IP needs a restart of nlbd.\n' +
          'Exit codes: 0 reloaded, 3 nothing changed, 2 rejected (reasons listed), 1 failed.\n',
      )
      .action(ctx.action((options: ControlOptions) => reload(options)));
  },
};
