/**
 * The component side of a bundle: the `node` export componentize-js wires to
 * the WIT world. The build command (`flowcraft-node build`) generates the
 * module that calls {@link exportBundle}; bundle authors do not import this.
 */
import type { Bundle } from './define.js';
import { type BundleMeta, describeBundle, executeRequest } from './dispatch.js';
import type { HostImports, WireBundleInfo, WireRequest, WireResult } from './wire.js';

/** The exported `flowcraft:node/node` interface. */
export interface NodeExport {
  describe(): WireBundleInfo;
  execute(request: WireRequest): Promise<WireResult>;
}

/**
 * Implements the `node` interface for `bundle` over the imported `host`.
 * An error variant leaves `execute` as a thrown value with a `payload`, which
 * componentize-js turns into the `result`'s error case.
 */
export function exportBundle(bundle: Bundle, host: HostImports, meta: BundleMeta): NodeExport {
  return {
    describe: () => describeBundle(bundle, meta),
    async execute(request) {
      const outcome = await executeRequest(bundle, host, request);
      if ('err' in outcome) {
        throw Object.assign(new Error(outcome.err.val), { payload: outcome.err });
      }
      return outcome.ok;
    },
  };
}
