// The JavaScript counterpart of the Rust `hostile` test bundle: nodes that
// loop forever, allocate without bound, return oversized output or throw
// (the host's sandbox tests expect each to end as a node failure with a clear
// reason while the host keeps serving), and `fetch`, built with wasi:http
// ("flowcraft": {"http": true}) for the host's allow-list tests.
import { defineBundle, defineNode } from 'flowcraft-node';

export default defineBundle({
  nodes: [
    defineNode({
      uses: 'spin',
      description: 'Loops forever (CPU limit test)',
      run: () => {
        for (;;) {
          // Busy: no await, so only the host's time limit ends the call.
        }
      },
    }),
    defineNode({
      uses: 'hog',
      description: 'Allocates and keeps memory without bound (memory limit test)',
      run: () => {
        const kept = [];
        for (;;) {
          kept.push(new Uint8Array(1 << 20).fill(7));
        }
      },
    }),
    defineNode({
      uses: 'big-output',
      description: 'Outputs a JSON string of params.bytes characters',
      run: ({ params }) => ({ output: 'x'.repeat(params.bytes) }),
    }),
    defineNode({
      uses: 'throw',
      description: 'Throws a TypeError',
      run: () => {
        throw new TypeError('hostile-js: throwing on purpose');
      },
    }),
    defineNode({
      uses: 'reject',
      description: 'Returns a promise that rejects with a string',
      run: async () => Promise.reject('hostile-js: rejected on purpose'),
    }),
    defineNode({
      uses: 'fetch',
      description: 'HTTP GET of params.url; outputs {status, body}, or {error} when the request fails',
      run: async ({ params }) => {
        try {
          const response = await fetch(params.url);
          return { output: { status: response.status, body: await response.text() } };
        } catch (error) {
          return { output: { error: String(error) } };
        }
      },
    }),
    defineNode({
      uses: 'echo',
      description: 'Outputs its input',
      run: ({ input }) => ({ output: input }),
    }),
  ],
});
