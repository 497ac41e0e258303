/**
 * The WIT contract `flowcraft:node@0.1.0` as JavaScript sees it: the host
 * functions a bundle imports and the records it exchanges with the host.
 * The declarations are generated from the repository's `wit/node.wit` at
 * build time (`scripts/generate-wit-types.mjs`).
 */
/// <reference path="./generated/bundle.d.ts" preserve="true" />

export type HostImports = typeof import('flowcraft:node/host@0.1.0');
export type WireRequest = import('flowcraft:node/types@0.1.0').Request;
export type WireResult = import('flowcraft:node/types@0.1.0').NodeResult;
export type WireError = import('flowcraft:node/types@0.1.0').NodeError;
export type WireBundleInfo = import('flowcraft:node/types@0.1.0').BundleInfo;
export type LogLevel = import('flowcraft:node/types@0.1.0').LogLevel;

/** What one execution hands back across the boundary: a result or an error variant. */
export type WireOutcome = { ok: WireResult } | { err: WireError };
