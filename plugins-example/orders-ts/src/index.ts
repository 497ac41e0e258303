/**
 * The orders bundle in TypeScript (bundle `orders-ts`): the same node types
 * and results as the Rust `orders` bundle of the README demo.
 * `validate-order` → `price-order` → `route-approval`, which routes by action
 * (`auto-approve`, `manager-review`, `reject`) to a `notify` node per outcome.
 */
import { defineBundle } from 'flowcraft-node';
import { notify } from './notify.ts';
import { priceOrder } from './price.ts';
import { routeApproval } from './route.ts';
import { validateOrder } from './validate.ts';

export default defineBundle({ nodes: [validateOrder, priceOrder, routeApproval, notify] });
