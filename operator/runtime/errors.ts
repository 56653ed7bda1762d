/** A reconcile error that retrying cannot fix (bad input): reported, not retried. */
export class TerminalError extends Error {
  readonly code = "TERMINAL";
}
