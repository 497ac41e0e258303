/**
 * flowcraft-node: write flowcraft-host workflow nodes in TypeScript or
 * JavaScript. Declare nodes with {@link defineNode}, export one
 * {@link defineBundle} as the entry module's default, unit-test them with
 * `flowcraft-node/testing`, and build the WebAssembly component with
 * `npx flowcraft-node build`.
 */
export { BaseNode, defineBundle, defineNode } from './define.js';
export type { Bundle, DynamicNode, NodeContext, NodeDeclaration, NodeFunction, NodeResult, NodeReturn, NodeSpec, RunInfo } from './define.js';
export { Context, Logger } from './context.js';
export { ContextWriteError, FatalError, InvalidInputError, NodeError, RetryableError } from './errors.js';
export type { NodeErrorKind } from './errors.js';
export type { LogLevel } from './wire.js';
