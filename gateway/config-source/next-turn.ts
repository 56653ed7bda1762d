/**
 * Resolves after the event loop has run its timers and polled for I/O at least once, so work split with
 * `await nextTurn()` lets requests in between its slices. One setImmediate is not enough: called from an I/O
 * callback (a worker's message is one), it runs in the same iteration's check phase, before any timer or
 * socket; the second one, queued from the check phase, waits for the next iteration.
 */
export const nextTurn = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
