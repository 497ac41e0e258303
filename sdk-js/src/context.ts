/**
 * What a running node sees of its run: the run context (JSON values shared by
 * the run's nodes), a logger, the clock and the bundle's configuration.
 * Every call acts on the run the node executes for, never on another run.
 * Calls are synchronous; `await`ing them, as Flowcraft's async context is
 * used, works unchanged.
 */
import { ContextWriteError, FatalError } from './errors.js';
import type { HostImports, LogLevel } from './wire.js';

/** The run context: typed by the shape the node expects (`Context<{ count: number }>`). */
export class Context<TContext extends object = Record<string, unknown>> {
  constructor(private readonly host: HostImports) {}

  /** The value under `key`, or `undefined` when there is none. */
  get<K extends keyof TContext & string>(key: K): TContext[K] | undefined {
    const text = this.host.contextGet(key);
    return text === undefined ? undefined : (JSON.parse(text) as TContext[K]);
  }

  /** Stores `value` (as JSON) under `key`; throws {@link ContextWriteError} when the host refuses. */
  set<K extends keyof TContext & string>(key: K, value: TContext[K]): void {
    const text = JSON.stringify(value);
    if (text === undefined) {
      throw new FatalError(`context key \`${key}\`: ${describeValue(value)} cannot be stored as JSON`);
    }
    try {
      this.host.contextSet(key, text);
    } catch (error) {
      throw new ContextWriteError(key, refusalReason(error));
    }
  }

  /** Whether `key` exists. */
  has(key: keyof TContext & string): boolean {
    return this.host.contextHas(key);
  }

  /** Removes `key`; returns whether it existed. */
  delete(key: keyof TContext & string): boolean {
    return this.host.contextDelete(key);
  }

  /** Every key of the run context. */
  keys(): string[] {
    return this.host.contextKeys();
  }

  /** The whole run context as one object (reads every key). */
  toJSON(): Partial<TContext> {
    const entries = this.keys().map((key) => [key, this.get(key as keyof TContext & string)]);
    return Object.fromEntries(entries) as Partial<TContext>;
  }
}

/** Structured logging into the host's log, tagged with the run, node and bundle. */
export class Logger {
  constructor(private readonly host: HostImports) {}

  trace(message: string, fields: Record<string, unknown> = {}): void {
    this.write('trace', message, fields);
  }
  debug(message: string, fields: Record<string, unknown> = {}): void {
    this.write('debug', message, fields);
  }
  info(message: string, fields: Record<string, unknown> = {}): void {
    this.write('info', message, fields);
  }
  warn(message: string, fields: Record<string, unknown> = {}): void {
    this.write('warn', message, fields);
  }
  error(message: string, fields: Record<string, unknown> = {}): void {
    this.write('error', message, fields);
  }

  private write(level: LogLevel, message: string, fields: Record<string, unknown>): void {
    this.host.log(level, message, JSON.stringify(fields) ?? '{}');
  }
}

/** A refusal from the host arrives as a component error whose payload is the reason. */
function refusalReason(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'payload' in error) {
    return String((error as { payload: unknown }).payload);
  }
  return error instanceof Error ? error.message : String(error);
}

function describeValue(value: unknown): string {
  return value === undefined ? 'undefined' : `a ${typeof value}`;
}
