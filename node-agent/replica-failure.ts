/** A replica failure with the CamelCase reason its status shows and a message a user can act on. */
export class ReplicaFailure extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = "ReplicaFailure";
    this.reason = reason;
  }
}
