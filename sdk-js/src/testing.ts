/**
 * Unit tests for nodes without a host: an in-memory run context, config
 * values, a clock and a log, behind the same host interface the component
 * imports. `TestHost.execute` runs a node the way the host does — by `uses`
 * key, with input and params as JSON, through the bundle's dispatch — so a
 * test sees exactly the encoding and error mapping the host sees.
 *
 * ```ts
 * const host = new TestHost({ context: { ordersSeen: 4 } });
 * const result = await host.execute(bundle, 'order-total', { input: [{ quantity: 3, priceCents: 250 }] });
 * assert.equal(result.action, 'large');
 * assert.equal(host.get('ordersSeen'), 5);
 * ```
 */
import type { Bundle, DynamicNode } from './define.js';
import { executeRequest } from './dispatch.js';
import { nodeError } from './errors.js';
import type { HostImports, LogLevel } from './wire.js';

/** The run, configuration and clock a test host starts with. */
export interface TestHostOptions {
  /** The run context's initial values. */
  context?: Record<string, unknown>;
  /** Configuration values granted to the bundle. */
  config?: Record<string, string>;
  /** A fixed clock; the real clock when absent. */
  nowMs?: number;
}

/** One call of {@link TestHost.execute}: no input, `{}` params, attempt 1 unless given. */
export interface TestCall {
  input?: unknown;
  params?: Record<string, unknown>;
  attempt?: number;
  runId?: string;
  nodeId?: string;
  blueprintId?: string;
}

/** A successful execution with its JSON parsed. */
export interface TestResult {
  output: unknown;
  action: string | undefined;
  dynamicNodes: DynamicNode[];
}

/** One record a node logged. */
export interface LogRecord {
  level: LogLevel;
  message: string;
  fields: unknown;
}

/** An in-memory host for one run. */
export class TestHost {
  private readonly context: Map<string, string>;
  private readonly config: Map<string, string>;
  private readonly pinnedNowMs: number | undefined;
  /** What nodes logged, in order. */
  readonly logs: LogRecord[] = [];

  constructor(options: TestHostOptions = {}) {
    this.context = new Map(Object.entries(options.context ?? {}).map(([key, value]) => [key, JSON.stringify(value)]));
    this.config = new Map(Object.entries(options.config ?? {}));
    this.pinnedNowMs = options.nowMs;
  }

  /** Runs node type `uses` of `bundle`; rejects with the node's error as a `RetryableError`, `FatalError` or `InvalidInputError`. */
  async execute(bundle: Bundle, uses: string, call: TestCall = {}): Promise<TestResult> {
    const outcome = await executeRequest(bundle, this.imports(), {
      uses,
      runId: call.runId ?? 'test-run',
      nodeId: call.nodeId ?? uses,
      blueprintId: call.blueprintId ?? 'test-blueprint',
      attempt: call.attempt ?? 1,
      input: call.input === undefined ? undefined : JSON.stringify(call.input),
      params: JSON.stringify(call.params ?? {}),
    });
    if ('err' in outcome) {
      throw nodeError(outcome.err.tag, outcome.err.val);
    }
    const { output, action, dynamicNodes } = outcome.ok;
    return {
      output: output === undefined ? undefined : JSON.parse(output),
      action,
      dynamicNodes: dynamicNodes.map((node) => JSON.parse(node) as DynamicNode),
    };
  }

  /** The value under `key` in the run context. */
  get(key: string): unknown {
    const text = this.context.get(key);
    return text === undefined ? undefined : JSON.parse(text);
  }

  /** The run context's keys. */
  keys(): string[] {
    return [...this.context.keys()];
  }

  private imports(): HostImports {
    return {
      contextGet: (key) => this.context.get(key),
      contextSet: (key, value) => {
        this.context.set(key, value);
      },
      contextHas: (key) => this.context.has(key),
      contextDelete: (key) => this.context.delete(key),
      contextKeys: () => [...this.context.keys()],
      log: (level, message, fields) => {
        this.logs.push({ level, message, fields: JSON.parse(fields) });
      },
      nowMs: () => BigInt(this.pinnedNowMs ?? Date.now()),
      configGet: (name) => this.config.get(name),
    };
  }
}
