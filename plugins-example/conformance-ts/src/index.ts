/**
 * The conformance bundle in TypeScript (bundle `conformance-ts`): the node
 * behaviours that the cases of `reference/conformance.md` use, under the
 * `uses` keys the cases name, behaving as the Rust `conformance` bundle does.
 * The host's conformance test runs the whole catalogue against it.
 */
import { defineBundle, defineNode, FatalError, InvalidInputError, RetryableError } from 'flowcraft-node';

type Params = Record<string, unknown>;

function numberInput(uses: string, input: unknown): number {
  if (typeof input !== 'number') {
    throw new InvalidInputError(`node "${uses}": invalid input: expected a number`);
  }
  return input;
}

export default defineBundle({
  nodes: [
    defineNode<unknown, Params>({ uses: 'const', description: 'Outputs params.value', run: ({ params }) => ({ output: params.value }) }),
    defineNode({ uses: 'echo', description: 'Outputs its input', run: ({ input }) => ({ output: input }) }),
    defineNode({ uses: 'double', description: 'Outputs its numeric input times 2', run: ({ input }) => ({ output: numberInput('double', input) * 2 }) }),
    defineNode({ uses: 'times10', description: 'Outputs its numeric input times 10', run: ({ input }) => ({ output: numberInput('times10', input) * 10 }) }),
    defineNode<number[]>({
      uses: 'sum',
      description: 'Outputs the sum of its input array (no input: 0)',
      run: ({ input }) => ({ output: (input ?? []).reduce((total, value) => total + value, 0) }),
    }),
    defineNode({ uses: 'fail', description: 'Fails with the retryable error "boom"', run: () => { throw new RetryableError('boom'); } }),
    defineNode({ uses: 'fatal', description: 'Fails with the fatal error "fatal!"', run: () => { throw new FatalError('fatal!'); } }),
    defineNode<unknown, { succeedOn: number }>({
      uses: 'flaky',
      description: 'Fails while the attempt number is below params.succeedOn, then outputs "ok@<attempt>"',
      run: ({ run, params }) => {
        if (run.attempt < params.succeedOn) {
          throw new RetryableError(`flaky: attempt ${run.attempt} fails (succeeds on attempt ${params.succeedOn})`);
        }
        return { output: `ok@${run.attempt}` };
      },
    }),
    defineNode<unknown, { value?: unknown; action: string }>({
      uses: 'act',
      description: 'Outputs params.value with action params.action',
      run: ({ params }) => ({ output: params.value, action: params.action }),
    }),
    defineNode<unknown, { key: string; value?: unknown }>({
      uses: 'setKey',
      description: 'Writes params.value to context key params.key and outputs it',
      run: ({ context, params }) => {
        const value = params.value ?? null;
        context.set(params.key, value);
        return { output: value };
      },
    }),
    defineNode<unknown, { key: string }>({
      uses: 'readKey',
      description: 'Outputs context key params.key',
      run: ({ context, params }) => ({ output: context.get(params.key) }),
    }),
    defineNode<unknown, { limit: number }, number, { count: number | null; keepGoing: boolean }>({
      uses: 'inc',
      description: 'Increments context key count and sets keepGoing = count < params.limit',
      run: ({ context, params }) => {
        const count = (context.get('count') ?? 0) + 1;
        context.set('count', count);
        context.set('keepGoing', count < params.limit);
        return { output: count };
      },
    }),
    defineNode<unknown, { ms: number }>({
      uses: 'slow',
      description: 'Waits params.ms milliseconds, then outputs "slow-done"',
      run: async ({ params }) => {
        await new Promise((resolve) => setTimeout(resolve, params.ms));
        return { output: 'slow-done' };
      },
    }),
    defineNode({ uses: 'noOutput', description: 'Returns no output', run: () => ({}) }),
    defineNode({
      uses: 'spawn',
      description: 'Outputs "spawned" and adds dynamic nodes d1 and d2 (const x, const y)',
      run: () => ({
        output: 'spawned',
        dynamicNodes: [
          { id: 'd1', uses: 'const', params: { value: 'x' } },
          { id: 'd2', uses: 'const', params: { value: 'y' } },
        ],
      }),
    }),
    defineNode({
      uses: 'readResume',
      description: 'Outputs {action, output} from context keys _resume.action and _resume.output',
      run: ({ context }) => ({ output: { action: context.get('_resume.action'), output: context.get('_resume.output') } }),
    }),
    defineNode({
      uses: 'withErrorField',
      description: 'Outputs "x" (upstream also returned an ignored error field)',
      run: () => ({ output: 'x', error: { message: 'ignored' } }) as { output: string },
    }),
    defineNode({
      uses: 'many',
      description: 'Writes context keys k0..k10 and outputs "many"',
      run: ({ context }) => {
        for (let index = 0; index <= 10; index += 1) {
          context.set(`k${index}`, index);
        }
        return { output: 'many' };
      },
    }),
    defineNode({
      uses: 'delTmp',
      description: 'Deletes context key tmp and outputs "deleted"',
      run: ({ context }) => {
        context.delete('tmp');
        return { output: 'deleted' };
      },
    }),
  ],
});
