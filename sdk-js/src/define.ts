/**
 * Declaring nodes and bundles. A node is a Flowcraft node — a function
 * `(ctx) => NodeResult` or a class with `prep`/`exec`/`post` — registered
 * under the `uses` key blueprints name it by; a bundle is the list of nodes
 * one component exports.
 */
import type { Context, Logger } from './context.js';

/** Facts about the attempt being executed. */
export interface RunInfo {
  /** The `uses` key being executed. */
  uses: string;
  /** The run this node belongs to. */
  runId: string;
  /** The node's id inside its blueprint. */
  nodeId: string;
  /** The blueprint the run executes. */
  blueprintId: string;
  /** 1 for the first attempt, 2 for the first retry, ... */
  attempt: number;
}

/** What a node gets: Flowcraft's `{ context, input, params }` plus the host's services. */
export interface NodeContext<TInput = unknown, TParams = Record<string, unknown>, TContext extends object = Record<string, unknown>> {
  /** The run context. */
  context: Context<TContext>;
  /** The resolved input; `undefined` when the node has none. */
  input: TInput | undefined;
  /** The node's `params` from the blueprint (`{}` when absent). */
  params: TParams;
  /** Which node, run and attempt is executing. */
  run: RunInfo;
  /** Structured logs into the host's log. */
  log: Logger;
  /** A configuration value or secret granted to this bundle (`[grants.<bundle>] config`), if any. */
  config(name: string): string | undefined;
  /** Wall-clock time in milliseconds since the Unix epoch (whole milliseconds). */
  nowMs(): number;
}

/** A node definition to add to the run (Flowcraft's `NodeDefinition`). */
export interface DynamicNode {
  id: string;
  uses: string;
  params?: Record<string, unknown>;
  inputs?: string | Record<string, string>;
  config?: Record<string, unknown>;
}

/** What a node returns (Flowcraft's `NodeResult`); every field is optional. */
export interface NodeResult<TOutput = unknown> {
  /** The node's output; `undefined` means no output (stored as `null`). */
  output?: TOutput;
  /** Routing action: edges whose `action` equals it are taken. */
  action?: string;
  /** Nodes to add to this run, as successors of this node. */
  dynamicNodes?: DynamicNode[];
}

/** Anything a node may return: a result, a promise of one, or nothing (no output). */
export type NodeReturn<TOutput> = NodeResult<TOutput> | void | Promise<NodeResult<TOutput> | void>;

/** A function node. */
export type NodeFunction<TInput, TParams, TOutput, TContext extends object> = (
  ctx: NodeContext<TInput, TParams, TContext>,
) => NodeReturn<TOutput>;

/**
 * A class node with Flowcraft's lifecycle. Each attempt runs `prep`, then
 * `exec`, then `post`, and `recover` in a finally when something threw; the
 * host retries a failed attempt as a whole (`config.maxRetries`) and runs the
 * blueprint's `config.fallback` node when attempts are exhausted.
 */
export abstract class BaseNode<TInput = unknown, TParams = Record<string, unknown>, TOutput = unknown, TContext extends object = Record<string, unknown>, TPrep = TInput | undefined, TExec = TOutput> {
  /** Gathers what `exec` needs; by default the node's input. */
  prep(ctx: NodeContext<TInput, TParams, TContext>): TPrep | Promise<TPrep> {
    return ctx.input as TPrep;
  }

  /** The node's work. */
  abstract exec(prepared: TPrep, ctx: NodeContext<TInput, TParams, TContext>): TExec | Promise<TExec>;

  /** Turns `exec`'s result into the node's result; by default `{ output: executed }`. */
  post(executed: TExec, _ctx: NodeContext<TInput, TParams, TContext>): NodeReturn<TOutput> {
    return { output: executed as unknown as TOutput };
  }

  /** Clean-up after a failed attempt; its own errors are logged and ignored. */
  recover(_error: unknown, _ctx: NodeContext<TInput, TParams, TContext>): void | Promise<void> {}
}

/** A node type: its `uses` key, a one-line description, and its implementation. */
export interface NodeSpec<TInput = any, TParams = any, TOutput = any, TContext extends object = any> {
  uses: string;
  description: string;
  /** A JSON Schema of the node's `params`, shown by `flowcraft-host plugins list`. */
  paramsSchema?: object;
  run: NodeFunction<TInput, TParams, TOutput, TContext>;
}

/** How a node is declared: a function (`run`) or a class with `prep`/`exec`/`post` (`node`). */
export type NodeDeclaration<TInput, TParams, TOutput, TContext extends object> =
  | NodeSpec<TInput, TParams, TOutput, TContext>
  | {
      uses: string;
      description: string;
      paramsSchema?: object;
      node: new () => BaseNode<TInput, TParams, TOutput, TContext, any, any>;
    };

/** Declares a node type. */
export function defineNode<TInput = unknown, TParams = Record<string, unknown>, TOutput = unknown, TContext extends object = Record<string, unknown>>(
  declaration: NodeDeclaration<TInput, TParams, TOutput, TContext>,
): NodeSpec<TInput, TParams, TOutput, TContext> {
  if ('run' in declaration) {
    return declaration;
  }
  const { node: NodeClass, ...rest } = declaration;
  return { ...rest, run: (ctx) => runLifecycle(new NodeClass(), ctx) };
}

async function runLifecycle<TInput, TParams, TOutput, TContext extends object>(
  node: BaseNode<TInput, TParams, TOutput, TContext, unknown, unknown>,
  ctx: NodeContext<TInput, TParams, TContext>,
): Promise<NodeResult<TOutput> | void> {
  try {
    const prepared = await node.prep(ctx);
    const executed = await node.exec(prepared, ctx);
    return await node.post(executed, ctx);
  } catch (error) {
    try {
      await node.recover(error, ctx);
    } catch (cleanupError) {
      ctx.log.warn('recover() failed', { error: String(cleanupError) });
    }
    throw error;
  }
}

/** The node types one component exports. */
export interface Bundle {
  nodes: NodeSpec[];
  /** Overrides the name the build takes from `package.json`. */
  name?: string;
  /** Overrides the version the build takes from `package.json`. */
  version?: string;
}

/** Declares a bundle; `uses` keys must be unique. Export it as the module's default. */
export function defineBundle(bundle: Bundle): Bundle {
  const seen = new Set<string>();
  for (const node of bundle.nodes) {
    if (seen.has(node.uses)) {
      throw new Error(`defineBundle: two node types share the uses key "${node.uses}"`);
    }
    seen.add(node.uses);
  }
  return bundle;
}
