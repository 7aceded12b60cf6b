// Client lists for `nlb map`: `--client ip:port` flags and a clients file (or stdin), one
// `ip:port` per line, IPv6 as `[addr]:port`, blank lines and `#` comments ignored. A bad line is
// an error naming its line number: a prediction for "most of the file" would mislead.
import { readFile, stat } from 'node:fs/promises';
import { type Endpoint, parseEndpoint } from '../core/address.js';
import { badArgument } from './errors.js';
import type { CliIo } from './render.js';

/** A million clients is ~50 MB of results in memory; more is a job for sampling, not a table. */
export const clientsMax = 1_000_000;
/** A million lines of the longest IPv6 form fit in 64 MiB; anything larger is the wrong input. */
export const clientsFileBytesMax = 64 * 1024 * 1024;

const lineHint =
  'write one client per line as ip:port (IPv6 as [addr]:port); blank lines and # comments are ignored';

/**
 * Parses a clients file's text. `source` names it in errors (`--clients-file clients.txt`).
 * Appends to `into` so flags and the file share one array.
 */
export function parseClientLines(text: string, source: string, into: Endpoint[] = []): Endpoint[] {
  let lineNumber = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) {
      end = text.length;
    }
    lineNumber++;
    let line = text.slice(start, end);
    start = end + 1;
    const hash = line.indexOf('#');
    if (hash >= 0) {
      line = line.slice(0, hash);
    }
    line = line.trim();
    if (line === '') {
      continue;
    }
    const parsed = parseEndpoint(line);
    if ('error' in parsed) {
      throw badArgument(`${source} line ${lineNumber}`, parsed.error, lineHint);
    }
    if (into.length >= clientsMax) {
      throw badArgument(
        `${source} line ${lineNumber}`,
        `more than ${clientsMax} clients`,
        `split the list into files of at most ${clientsMax} clients`,
      );
    }
    into.push(parsed);
  }
  return into;
}

/** Parses `--client` values (commander collects them in order). */
export function parseClientFlags(values: readonly string[], into: Endpoint[] = []): Endpoint[] {
  for (const value of values) {
    const parsed = parseEndpoint(value);
    if ('error' in parsed) {
      throw badArgument('--client', parsed.error, lineHint.replace('one client per line', 'it'));
    }
    into.push(parsed);
  }
  return into;
}

async function readStdin(io: CliIo): Promise<string> {
  if ((io.stdin as { isTTY?: boolean }).isTTY === true) {
    throw badArgument(
      '--clients-file -',
      'reads clients from stdin, but stdin is a terminal',
      'pipe the list in (e.g. cat clients.txt | nlb map ... --clients-file -) or give a path',
    );
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of io.stdin) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    bytes += buffer.length;
    if (bytes > clientsFileBytesMax) {
      throw badArgument(
        '--clients-file -',
        `stdin is over ${clientsFileBytesMax} bytes`,
        `give at most ${clientsMax} clients`,
      );
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readClientsFile(path: string): Promise<string> {
  const argument = `--clients-file ${path}`;
  try {
    const info = await stat(path);
    if (!info.isFile()) {
      throw badArgument(argument, 'not a regular file', "give a file's path, or - for stdin");
    }
    if (info.size > clientsFileBytesMax) {
      throw badArgument(
        argument,
        `${info.size} bytes is over the ${clientsFileBytesMax}-byte limit`,
        `give at most ${clientsMax} clients`,
      );
    }
    return await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES') {
      throw badArgument(
        argument,
        code === 'ENOENT' ? 'no such file' : 'permission denied',
        'give the path of a file with one ip:port per line, or - for stdin',
      );
    }
    throw error;
  }
}

/** Reads the clients file at `path`, or stdin for `-`. */
export async function readClients(path: string, io: CliIo, into: Endpoint[]): Promise<Endpoint[]> {
  const text = path === '-' ? await readStdin(io) : await readClientsFile(path);
  return parseClientLines(
    text,
    path === '-' ? '--clients-file (stdin)' : `--clients-file ${path}`,
    into,
  );
}
