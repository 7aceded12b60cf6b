// The long-lived `nft -i` one realtime priority above nlbd (src/dataplane/nft-cli.ts,
// src/daemon/scheduling.ts): started through chrt when asked, and without it for good once a
// chrt session died before its first answer (chrt missing or refused). A shell loop stands in
// for nft -i: it answers the done command as nft does. The real process's priority is checked
// in daemon-main.test.ts.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { kernelUpdatePriority } from '../src/daemon/scheduling.js';
import type { Runner } from '../src/dataplane/exec.js';
import { NftCli } from '../src/dataplane/nft-cli.js';

const answering = 'while read l; do case "$l" in describe*) echo "datatype mark";; esac; done';

function fakeRunner(works: (argv: string[]) => boolean): { runner: Runner; spawned: string[][] } {
  const spawned: string[][] = [];
  const runner: Runner = {
    run: () => Promise.resolve({ code: 0, stdout: '', stderr: '' }),
    spawn: (file, args) => {
      const argv = [file, ...args];
      spawned.push(argv);
      return spawn('sh', ['-c', works(argv) ? answering : 'exit 1'], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    },
  };
  return { runner, spawned };
}

const line = 'add element inet nlb_t rule0_owned { 0x00000001 }';

describe('the interactive nft above nlbd', () => {
  it('starts nft -i through chrt at the priority asked', async () => {
    const { runner, spawned } = fakeRunner(() => true);
    const nft = new NftCli({ runner, interactivePriority: 11 });
    await nft.applyQuick('nlb_t', line);
    await nft.applyQuick('nlb_t', line);
    expect(spawned).toEqual([['chrt', '--rr', '11', 'nft', '-i']]);
    expect(nft.quickFallbacks).toBe(0);
    await nft.close();
  });

  it('falls back to nft -f once and inherits from then on when chrt cannot start it', async () => {
    const { runner, spawned } = fakeRunner((argv) => argv[0] !== 'chrt');
    const nft = new NftCli({ runner, interactivePriority: 11 });
    await nft.applyQuick('nlb_t', line);
    expect(nft.quickFallbacks).toBe(1);
    await nft.applyQuick('nlb_t', line);
    await nft.applyQuick('nlb_t', line);
    expect(spawned).toEqual([
      ['chrt', '--rr', '11', 'nft', '-i'],
      ['nft', '-i'],
    ]);
    expect(nft.quickFallbacks).toBe(1);
    await nft.close();
  });

  it('asks one above nlbd whenever nlbd runs realtime, and nothing otherwise', () => {
    expect(kernelUpdatePriority({ policy: 'SCHED_RR', priority: 10, applied: true })).toBe(11);
    expect(kernelUpdatePriority({ policy: 'SCHED_RR', priority: 99, applied: true })).toBe(99);
    // Set by a service manager (deploy/nlbd.service allows the step up with LimitRTPRIO=).
    expect(kernelUpdatePriority({ policy: 'SCHED_FIFO', priority: 10, applied: false })).toBe(11);
    expect(kernelUpdatePriority({ policy: 'SCHED_OTHER', priority: 0, applied: false })).toBe(
      undefined,
    );
  });
});
