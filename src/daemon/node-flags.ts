// The flags node runs nlbd with: in nlbd's shebang (scripts/build-daemon.mjs writes it), the
// systemd unit's ExecStart (deploy/nlbd.service) and the lab's daemon command. A test checks the
// three agree.

/**
 * A cluster's heartbeats keep small objects alive across a young-generation collection (each
 * peer's latest state), and V8 answers that survival by growing the young generation, up to
 * 16 MB per semi-space: about 25 MB more anonymous memory per nlbd at 32 hosts, never given
 * back. Capped at 1 MB, the collections come more often and cost well under a millisecond each
 * (bench/results/footprint.md has the memory and CPU of both).
 */
export const nlbdNodeFlags: readonly string[] = ['--max-semi-space-size=1'];

/** nlbd's first line: `env -S` passes the flags (coreutils 8.30 and later). */
export const nlbdShebang = `#!/usr/bin/env -S node ${nlbdNodeFlags.join(' ')}`;
