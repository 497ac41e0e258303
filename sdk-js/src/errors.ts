/**
 * Why a node failed. Throw one of these from a node; the variant tells the
 * host whether to retry (the WIT `node-error`). Anything else a node throws
 * counts as a {@link RetryableError}, as a thrown error does in Flowcraft.
 */

/** The host's three failure kinds, named as in the WIT `node-error`. */
export type NodeErrorKind = 'retryable' | 'fatal' | 'invalid-input';

/** A node failure with the kind the host acts on. */
export abstract class NodeError extends Error {
  abstract readonly kind: NodeErrorKind;
}

/** A transient failure: retried while attempts remain, then the fallback runs. */
export class RetryableError extends NodeError {
  readonly kind = 'retryable';
  override name = 'RetryableError';
}

/** A permanent failure: no more attempts and no fallback; the run fails. */
export class FatalError extends NodeError {
  readonly kind = 'fatal';
  override name = 'FatalError';
}

/** The input or params are unusable; the host treats it like {@link FatalError}. */
export class InvalidInputError extends NodeError {
  readonly kind = 'invalid-input';
  override name = 'InvalidInputError';
}

/** The error class for each kind, for turning a wire error back into an exception. */
export function nodeError(kind: NodeErrorKind, message: string): NodeError {
  switch (kind) {
    case 'retryable':
      return new RetryableError(message);
    case 'fatal':
      return new FatalError(message);
    case 'invalid-input':
      return new InvalidInputError(message);
  }
}

/** The host refused a context write (a reserved key, or the per-call write budget is used up). */
export class ContextWriteError extends FatalError {
  override name = 'ContextWriteError';
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super(`the host refused to write context key \`${key}\`: ${reason}`);
  }
}
