// The one place `nlb` prints. A command handler returns a `CommandOutput`: the data (printed
// as exactly one JSON document under --json, nothing else on stdout) and a human view of it (a
// table, label/value fields or text, printed by default). Errors of any kind become one
// `NlbError` here and are printed as a message and a hint, with the exit code that goes with
// them (src/cli/exit-codes.ts).
import { CommanderError } from 'commander';
import { NlbError } from './errors.js';
import { type ExitCode, exitCodes } from './exit-codes.js';
import { errorText } from '../core/error-text.js';

export interface Column<Row> {
  /** Printed upper-cased as the column header. */
  readonly header: string;
  readonly cell: (row: Row) => string;
  /** Numbers read best right-aligned. */
  readonly align?: 'left' | 'right';
}

export type HumanView =
  | {
      readonly kind: 'table';
      readonly columns: readonly Column<never>[];
      readonly rows: readonly unknown[];
      /** Lines printed after the table (summaries, explanations). */
      readonly notes: readonly string[];
    }
  | {
      readonly kind: 'fields';
      readonly fields: readonly (readonly [label: string, value: string])[];
      readonly notes: readonly string[];
    }
  | { readonly kind: 'text'; readonly text: string };

export interface CommandOutput<Data = unknown> {
  /** Printed as is, as one JSON document, under --json. */
  readonly data: Data;
  /** What a person sees without --json. */
  readonly human: HumanView;
  /** Defaults to 0; a handler may return data and still report e.g. "already in that state". */
  readonly exitCode?: ExitCode;
}

/**
 * What a verb returns when it wrote its output as it came (a stream of events, a child on the
 * terminal): nothing is left to print, and the exit code may be the child's own.
 */
export interface StreamedOutput {
  readonly streamed: true;
  readonly exitCode: number;
}

export type VerbOutput = CommandOutput | StreamedOutput;

/** A table view; `cell` functions see each row. */
export function table<Row>(
  columns: readonly Column<Row>[],
  rows: readonly Row[],
  notes: readonly string[] = [],
): HumanView {
  return { kind: 'table', columns: columns as readonly Column<never>[], rows, notes };
}

/** A label/value view for a single record. */
export function fields(
  entries: readonly (readonly [label: string, value: string])[],
  notes: readonly string[] = [],
): HumanView {
  return { kind: 'fields', fields: entries, notes };
}

export function text(content: string): HumanView {
  return { kind: 'text', text: content };
}

/** Where output goes; tests pass their own streams. */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly stdin: NodeJS.ReadableStream;
}

function renderTable(view: Extract<HumanView, { kind: 'table' }>): string {
  const columns = view.columns as readonly Column<unknown>[];
  const last = columns.length - 1;
  // Cells are computed column by column, once, so a 100,000-row table costs one string per cell
  // plus one per line.
  const cells = columns.map((column) => view.rows.map((row) => column.cell(row)));
  const widths = columns.map((column, c) =>
    cells[c]!.reduce((width, cell) => Math.max(width, cell.length), column.header.length),
  );
  const line = (values: (c: number) => string): string => {
    let out = '';
    for (let c = 0; c <= last; c++) {
      const value = values(c);
      const width = widths[c]!;
      if (columns[c]!.align === 'right') {
        out += value.padStart(width);
      } else {
        out += c === last ? value : value.padEnd(width);
      }
      if (c < last) {
        out += '  ';
      }
    }
    return out;
  };
  const lines: string[] = new Array<string>(view.rows.length + 1);
  lines[0] = line((c) => columns[c]!.header.toUpperCase());
  for (let r = 0; r < view.rows.length; r++) {
    lines[r + 1] = line((c) => cells[c]![r]!);
  }
  let out = lines.join('\n') + '\n';
  if (view.notes.length > 0) {
    out += '\n' + view.notes.join('\n') + '\n';
  }
  return out;
}

function renderFields(view: Extract<HumanView, { kind: 'fields' }>): string {
  const width = view.fields.reduce((w, [label]) => Math.max(w, label.length), 0);
  let out = view.fields.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n');
  out += '\n';
  if (view.notes.length > 0) {
    out += '\n' + view.notes.join('\n') + '\n';
  }
  return out;
}

export function renderHuman(view: HumanView): string {
  switch (view.kind) {
    case 'table':
      return renderTable(view);
    case 'fields':
      return renderFields(view);
    case 'text':
      return view.text.endsWith('\n') ? view.text : `${view.text}\n`;
  }
}

export function renderJson(data: unknown): string {
  return JSON.stringify(data, null, 2) + '\n';
}

/**
 * Prints a handler's result (JSON only under --json, the human view otherwise) and returns the
 * exit code; a streamed result was printed already.
 */
export function writeOutput(output: VerbOutput, json: boolean, io: CliIo): number {
  if ('streamed' in output) return output.exitCode;
  io.stdout.write(json ? renderJson(output.data) : renderHuman(output.human));
  return output.exitCode ?? exitCodes.ok;
}

/**
 * Turns anything thrown into an `NlbError`. `commandName` is the verb being parsed (for the
 * hint), when known.
 */
export function toNlbError(error: unknown, commandName?: string): NlbError {
  if (error instanceof NlbError) {
    return error;
  }
  const helpCommand = commandName === undefined ? 'nlb --help' : `nlb ${commandName} --help`;
  if (error instanceof CommanderError) {
    if (error.code === 'commander.help') {
      // Commander has already printed the help (to stderr) because no command was given.
      return new NlbError(
        'bad-usage',
        'no command given',
        "run 'nlb --help' to list the commands",
        exitCodes.usage,
      );
    }
    return new NlbError(
      'bad-usage',
      error.message.replace(/^error: /, ''),
      `run '${helpCommand}' for usage`,
      exitCodes.usage,
    );
  }
  const message = errorText(error);
  return new NlbError(
    'internal',
    `internal error: ${message}`,
    'this is a bug in nlb; please report it with the command line that caused it',
    exitCodes.failed,
  );
}

/**
 * Prints an error and returns its exit code. Under --json the error is the one JSON document on
 * stdout (`{"error": {...}}`); the human message goes to stderr either way, so a person watching
 * a script still sees what went wrong.
 */
export function writeError(
  error: unknown,
  json: boolean,
  io: CliIo,
  commandName?: string,
): ExitCode {
  if (error instanceof CommanderError && error.exitCode === 0) {
    // --help and --version: commander printed them; that is success.
    return exitCodes.ok;
  }
  const nlbError = toNlbError(error, commandName);
  if (json) {
    io.stdout.write(
      renderJson({
        error: {
          code: nlbError.code,
          message: nlbError.message,
          hint: nlbError.hint,
          exitCode: nlbError.exitCode,
        },
      }),
    );
  }
  let out = `nlb: ${nlbError.message}\n`;
  if (nlbError.hint !== '') {
    out += `hint: ${nlbError.hint}\n`;
  }
  if (nlbError.code === 'internal' && error instanceof Error && error.stack !== undefined) {
    out += `${error.stack}\n`;
  }
  io.stderr.write(out);
  return nlbError.exitCode;
}
