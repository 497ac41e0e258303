// JavaScript equivalents of the conformance-bundle nodes the benchmark blueprints use
// (plugins-example/conformance): `double`, `times10` and `echo`. Like the WASM nodes, the numeric
// ones refuse a non-numeric input.

function numberInput(uses, input) {
  if (typeof input !== "number") throw new Error(`node \`${uses}\`: input must be a number, got ${typeof input}`);
  return input;
}

export const nodes = {
  double: async ({ input }) => ({ output: numberInput("double", input) * 2 }),
  times10: async ({ input }) => ({ output: numberInput("times10", input) * 10 }),
  echo: async ({ input }) => ({ output: input }),
};
