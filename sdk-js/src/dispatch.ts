/**
 * The JSON level between the host and a bundle's nodes: finds the node a
 * request names, decodes its input and params, runs it, and encodes what it
 * returned or threw. The component export and the test host both go through
 * here, so a unit test exercises the same encoding the host sees.
 */
import { Context, Logger } from './context.js';
import type { Bundle, NodeContext, NodeResult, NodeSpec } from './define.js';
import { InvalidInputError, NodeError } from './errors.js';
import type { HostImports, WireBundleInfo, WireOutcome, WireRequest, WireResult } from './wire.js';

/** The name and version a bundle reports when it does not override them. */
export interface BundleMeta {
  name: string;
  version: string;
}

/** The bundle as `describe` reports it. */
export function describeBundle(bundle: Bundle, meta: BundleMeta): WireBundleInfo {
  return {
    name: bundle.name ?? meta.name,
    version: bundle.version ?? meta.version,
    nodes: bundle.nodes.map((node) => ({
      uses: node.uses,
      description: node.description,
      paramsSchema: node.paramsSchema === undefined ? undefined : JSON.stringify(node.paramsSchema),
    })),
  };
}

/** Runs the node `request.uses` names; never throws. */
export async function executeRequest(bundle: Bundle, host: HostImports, request: WireRequest): Promise<WireOutcome> {
  try {
    const node = findNode(bundle, request.uses);
    const returned = await node.run(nodeContext(host, request));
    return { ok: encodeResult(request.uses, returned) };
  } catch (error) {
    return { err: encodeError(error) };
  }
}

function findNode(bundle: Bundle, uses: string): NodeSpec {
  const node = bundle.nodes.find((candidate) => candidate.uses === uses);
  if (node === undefined) {
    const known = bundle.nodes.map((candidate) => candidate.uses).join(', ');
    throw new InvalidInputError(`this bundle has no node type "${uses}" (it has: ${known})`);
  }
  return node;
}

function nodeContext(host: HostImports, request: WireRequest): NodeContext {
  return {
    context: new Context(host),
    input: request.input === undefined ? undefined : decode(request.uses, 'input', request.input),
    params: decode(request.uses, 'params', request.params) as Record<string, unknown>,
    run: {
      uses: request.uses,
      runId: request.runId,
      nodeId: request.nodeId,
      blueprintId: request.blueprintId,
      attempt: request.attempt,
    },
    log: new Logger(host),
    config: (name) => host.configGet(name),
    nowMs: () => Number(host.nowMs()),
  };
}

function decode(uses: string, what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InvalidInputError(`node "${uses}": ${what} is not JSON: ${(error as Error).message}`);
  }
}

/** Only an object's `output`, `action` and `dynamicNodes` count, as in Flowcraft; anything else is no output. */
function encodeResult(uses: string, returned: NodeResult | void): WireResult {
  if (typeof returned !== 'object' || returned === null) {
    return { dynamicNodes: [] };
  }
  if (returned.action !== undefined && typeof returned.action !== 'string') {
    throw new NodeShapeError(`node "${uses}" returned an action that is not a string`);
  }
  return {
    output: returned.output === undefined ? undefined : encodeJson(uses, 'output', returned.output),
    action: returned.action,
    dynamicNodes: (returned.dynamicNodes ?? []).map((node, index) => encodeJson(uses, `dynamicNodes[${index}]`, node)),
  };
}

function encodeJson(uses: string, what: string, value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new NodeShapeError(`node "${uses}": its ${what} cannot be encoded as JSON: ${(error as Error).message}`);
  }
  if (text === undefined) {
    throw new NodeShapeError(`node "${uses}": its ${what} (${typeof value}) cannot be encoded as JSON`);
  }
  return text;
}

/** A node returned something the host cannot store; retrying returns the same. */
class NodeShapeError extends NodeError {
  readonly kind = 'fatal';
}

function encodeError(error: unknown): { tag: NodeError['kind']; val: string } {
  if (error instanceof NodeError) {
    return { tag: error.kind, val: error.message };
  }
  if (error instanceof Error) {
    return { tag: 'retryable', val: `${error.name}: ${error.message}` };
  }
  return { tag: 'retryable', val: `a node threw ${String(error)}` };
}
