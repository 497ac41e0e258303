import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInputError } from 'flowcraft-node';
import { TestHost } from 'flowcraft-node/testing';
import bundle from '../src/index.ts';

test('greet greets and counts', async () => {
  const host = new TestHost({ context: { greetings: 2 } });
  const result = await host.execute(bundle, 'greet', { input: 'Ada' });
  assert.equal(result.output, 'Hello, Ada!');
  assert.equal(host.get('greetings'), 3);
});

test('an empty name is invalid input', async () => {
  await assert.rejects(new TestHost().execute(bundle, 'greet', { input: ' ' }), InvalidInputError);
});
