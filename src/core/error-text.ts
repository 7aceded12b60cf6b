// What an error says, for a log line or a message: its message when it is an Error, else its
// text. Thrown values are `unknown` in TypeScript; every edge that reports one uses this.

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
