// Unit tests of the SDK through its test host: the dispatch, the JSON
// encoding and the error mapping that the component export uses too.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BaseNode, defineBundle, defineNode, FatalError, InvalidInputError, RetryableError } from '../dist/index.js';
import { TestHost } from '../dist/testing.js';

const counter = defineNode({
  uses: 'count',
  description: 'Adds params.by to context key count and routes by parity',
  paramsSchema: { type: 'object', properties: { by: { type: 'number' } } },
  run: async ({ context, params, log }) => {
    const count = (await context.get('count')) ?? 0;
    const next = count + params.by;
    context.set('count', next);
    log.info('counted', { next });
    return { output: next, action: next % 2 === 0 ? 'even' : 'odd' };
  },
});

class Upper extends BaseNode {
  exec(text) {
    return text.toUpperCase();
  }
}

const nodes = [
  counter,
  defineNode({ uses: 'upper', description: 'Upper-cases its input', node: Upper }),
  defineNode({ uses: 'echo', description: 'Outputs its input', run: ({ input }) => ({ output: input }) }),
  defineNode({ uses: 'nothing', description: 'Returns nothing', run: () => {} }),
  defineNode({ uses: 'number', description: 'Returns a bare number', run: () => 42 }),
  defineNode({ uses: 'info', description: 'Outputs run info, config and clock', run: ({ run, config, nowMs }) => ({ output: { run, greeting: config('greeting'), missing: config('missing') ?? null, now: nowMs() } }) }),
  defineNode({ uses: 'spawn', description: 'Adds a dynamic node', run: () => ({ output: 'spawned', dynamicNodes: [{ id: 'd1', uses: 'echo', params: { x: 1 } }] }) }),
  defineNode({ uses: 'retry', description: 'Throws RetryableError', run: () => { throw new RetryableError('gateway timed out'); } }),
  defineNode({ uses: 'fatal', description: 'Throws FatalError', run: () => { throw new FatalError('card declined'); } }),
  defineNode({ uses: 'invalid', description: 'Throws InvalidInputError', run: () => { throw new InvalidInputError('no items'); } }),
  defineNode({ uses: 'plain', description: 'Throws a TypeError', run: () => null.field }),
  defineNode({ uses: 'bigint', description: 'Returns a BigInt output', run: () => ({ output: 1n }) }),
  defineNode({ uses: 'keys', description: 'Deletes tmp and lists keys', run: ({ context }) => ({ output: { deleted: context.delete('tmp'), again: context.delete('tmp'), has: context.has('count'), keys: context.keys().sort(), all: context.toJSON() } }) }),
];
const bundle = defineBundle({ nodes });

test('a function node reads and writes the context, logs, and routes by action', async () => {
  const host = new TestHost({ context: { count: 3 } });
  const result = await host.execute(bundle, 'count', { params: { by: 4 } });
  assert.deepEqual(result, { output: 7, action: 'odd', dynamicNodes: [] });
  assert.equal(host.get('count'), 7);
  assert.deepEqual(host.logs, [{ level: 'info', message: 'counted', fields: { next: 7 } }]);
});

test('a class node runs prep (the input by default), exec and post (output by default)', async () => {
  const result = await new TestHost().execute(bundle, 'upper', { input: 'shout' });
  assert.equal(result.output, 'SHOUT');
});

test('input is undefined when absent, and null when the input is null', async () => {
  const host = new TestHost();
  assert.equal((await host.execute(bundle, 'echo')).output, undefined);
  assert.equal((await host.execute(bundle, 'echo', { input: null })).output, null);
});

test('returning nothing or a non-object is a result without output', async () => {
  const host = new TestHost();
  assert.deepEqual(await host.execute(bundle, 'nothing'), { output: undefined, action: undefined, dynamicNodes: [] });
  assert.deepEqual(await host.execute(bundle, 'number'), { output: undefined, action: undefined, dynamicNodes: [] });
});

test('run info, config values and the clock come from the host', async () => {
  const host = new TestHost({ config: { greeting: 'hi' }, nowMs: 1_700_000_000_123 });
  const { output } = await host.execute(bundle, 'info', { attempt: 3, runId: 'r1', nodeId: 'n1', blueprintId: 'b1' });
  assert.deepEqual(output, {
    run: { uses: 'info', runId: 'r1', nodeId: 'n1', blueprintId: 'b1', attempt: 3 },
    greeting: 'hi',
    missing: null,
    now: 1_700_000_000_123,
  });
});

test('dynamic nodes are returned as node definitions', async () => {
  const result = await new TestHost().execute(bundle, 'spawn');
  assert.deepEqual(result.dynamicNodes, [{ id: 'd1', uses: 'echo', params: { x: 1 } }]);
});

test('each error class reaches the host as its own kind', async () => {
  const host = new TestHost();
  await assert.rejects(host.execute(bundle, 'retry'), (error) => error instanceof RetryableError && error.message === 'gateway timed out');
  await assert.rejects(host.execute(bundle, 'fatal'), (error) => error instanceof FatalError && error.message === 'card declined');
  await assert.rejects(host.execute(bundle, 'invalid'), (error) => error instanceof InvalidInputError && error.message === 'no items');
});

test('any other thrown error is retryable and names its type', async () => {
  await assert.rejects(new TestHost().execute(bundle, 'plain'), (error) => error instanceof RetryableError && error.message.startsWith('TypeError: '));
});

test('an output that is not JSON is a fatal error naming the node', async () => {
  await assert.rejects(new TestHost().execute(bundle, 'bigint'), (error) => error instanceof FatalError && /node "bigint": its output cannot be encoded as JSON/.test(error.message));
});

test('an unknown node type is invalid input listing the bundle\'s types', async () => {
  await assert.rejects(new TestHost().execute(bundle, 'nope'), (error) => error instanceof InvalidInputError && /no node type "nope" \(it has: count, upper/.test(error.message));
});

test('delete, has, keys and toJSON see the run context', async () => {
  const host = new TestHost({ context: { tmp: 1, count: 2 } });
  const { output } = await host.execute(bundle, 'keys');
  assert.deepEqual(output, { deleted: true, again: false, has: true, keys: ['count'], all: { count: 2 } });
  assert.deepEqual(host.keys(), ['count']);
});

test('defineBundle refuses two nodes with one uses key', () => {
  assert.throws(() => defineBundle({ nodes: [counter, counter] }), /two node types share the uses key "count"/);
});
