// Secret files (the cluster key and the remote control token) are refused, not warned about,
// when group or others may read or write them or when someone other than root owns them; the
// refusal names the file, the mode in octal, the owner and the exact fix. The same rules for
// both readers. Ownership cases need root (chown); the suite runs as root, like nlbd.
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readKeyFile } from '../src/daemon/key-file.js';
import { readTokenFile } from '../src/control/remote-target.js';
import { looseSecretFile, secretFileRuleHint } from '../src/node/secret-file.js';

const isRoot = process.getuid?.() === 0;

interface Reader {
  readonly what: 'key file' | 'token file';
  readonly content: () => Buffer | string;
  read(file: string): Promise<{ ok: boolean; message?: string; hint?: string }>;
}

const readers: Reader[] = [
  { what: 'key file', content: () => randomBytes(32), read: readKeyFile },
  {
    what: 'token file',
    content: () => `${randomBytes(32).toString('hex')}\n`,
    read: readTokenFile,
  },
];

let dir: string;
let serial = 0;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nlb-secret-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function secretFile(reader: Reader, mode: number, uid = 0): string {
  const file = path.join(dir, `secret-${serial++}`);
  writeFileSync(file, reader.content());
  chmodSync(file, mode);
  if (uid !== 0) chownSync(file, uid, uid);
  return file;
}

describe.each(readers)('$what', (reader) => {
  it.runIf(isRoot).each([
    ['group-writable', 0o620, 0, /is writable by group or others \(mode 0620, owner uid 0\)/],
    ['other-readable', 0o604, 0, /is readable by group or others \(mode 0604, owner uid 0\)/],
    ['world-readable', 0o644, 0, /is readable by group or others \(mode 0644, owner uid 0\)/],
    [
      'readable and writable by all',
      0o666,
      0,
      /writable by group or others and readable by group or others \(mode 0666/,
    ],
    ['group-executable', 0o610, 0, /executable by group or others \(mode 0610/],
    ['owned by uid 65534', 0o600, 65534, /owned by uid 65534, not by root \(mode 0600/],
  ])('refuses a %s file, naming it, its mode, its owner and the fix', async (_, mode, uid, why) => {
    const file = secretFile(reader, mode, uid);
    const result = await reader.read(file);
    expect(result).toEqual({
      ok: false,
      message: expect.stringMatching(why),
      hint: secretFileRuleHint,
    });
    expect(result.message).toContain(`${reader.what} '${file}' is `);
    expect(result.message).toContain(`fix it: \`chown root:root ${file}; chmod 600 ${file}\``);
  });

  it('accepts a file of root (or of its reader) with mode 600 or 400', async () => {
    for (const mode of [0o600, 0o400]) {
      expect(await reader.read(secretFile(reader, mode))).toMatchObject({
        ok: true,
      });
    }
  });

  it('follows a symbolic link: the file it leads to is what is checked', async () => {
    const good = path.join(dir, `link-${serial++}`);
    symlinkSync(secretFile(reader, 0o600), good);
    expect(await reader.read(good)).toMatchObject({ ok: true });
    const loose = path.join(dir, `link-${serial++}`);
    symlinkSync(secretFile(reader, 0o644), loose);
    expect(await reader.read(loose)).toMatchObject({
      ok: false,
      message: expect.stringContaining(`'${loose}' is readable by group or others (mode 0644`),
    });
  });

  it('checks the owner and mode before the content', async () => {
    const file = path.join(dir, `short-${serial++}`);
    writeFileSync(file, 'abc');
    chmodSync(file, 0o644);
    expect(await reader.read(file)).toMatchObject({
      ok: false,
      message: expect.stringContaining('readable by group or others'),
    });
  });
});

describe('looseSecretFile, for any reader', () => {
  const rules = { what: 'token file', risk: 'whoever can read it controls this host' } as const;

  it('lets a user other than root use a 600 file of their own, and says how to fix theirs', () => {
    expect(looseSecretFile(rules, '/home/op/t', { uid: 1000, mode: 0o100600 }, 1000)).toBe(
      undefined,
    );
    expect(looseSecretFile(rules, '/home/op/t', { uid: 1000, mode: 0o100640 }, 1000)).toBe(
      "token file '/home/op/t' is readable by group or others (mode 0640, owner uid 1000): whoever can read it controls this host; fix it: `chmod 600 /home/op/t`",
    );
    expect(looseSecretFile(rules, '/srv/t', { uid: 33, mode: 0o100600 }, 1000)).toBe(
      "token file '/srv/t' is owned by uid 33, neither by root nor by you (uid 1000) (mode 0600, owner uid 33): whoever can read it controls this host; fix it: `install -m 600 /srv/t ~/nlb-control.token` and use the copy",
    );
  });

  it('quotes a path the shell would split', () => {
    expect(looseSecretFile(rules, "/etc/nlb/my token's", { uid: 0, mode: 0o100644 }, 0)).toContain(
      "fix it: `chown root:root '/etc/nlb/my token'\\''s'; chmod 600 '/etc/nlb/my token'\\''s'`",
    );
  });
});
