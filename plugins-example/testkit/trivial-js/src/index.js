// The JavaScript counterpart of the Rust `trivial` test bundle: one node that
// does as little as possible, for comparing the per-call cost of JavaScript
// bundles with Rust ones. Unlike the Rust node, the SDK parses the input JSON
// and serializes the output again.
import { defineBundle, defineNode } from 'flowcraft-node';

export default defineBundle({
  nodes: [
    defineNode({
      uses: 'noop',
      description: 'Outputs its input unchanged',
      run: ({ input }) => ({ output: input }),
    }),
  ],
});
