/** `route-approval`: routes a priced order by its total to action auto-approve, manager-review or reject. */
import { defineNode, InvalidInputError } from 'flowcraft-node';
import { formatCents, type PricedOrder } from './order.ts';

interface RouteParams {
  autoApproveBelowCents: number;
  rejectAboveCents: number;
}

interface Routing {
  orderId: string;
  customerId: string;
  currency: string;
  totalCents: number;
  decision: string;
  reason: string;
}

export const routeApproval = defineNode<PricedOrder, RouteParams, Routing>({
  uses: 'route-approval',
  description: 'Routes a priced order: action auto-approve, manager-review or reject',
  paramsSchema: {
    type: 'object',
    required: ['autoApproveBelowCents', 'rejectAboveCents'],
    properties: {
      autoApproveBelowCents: { type: 'integer', minimum: 0 },
      rejectAboveCents: { type: 'integer', minimum: 0 },
    },
  },
  run: ({ input, params }) => {
    if (params.autoApproveBelowCents > params.rejectAboveCents) {
      throw new InvalidInputError('params.autoApproveBelowCents must not exceed params.rejectAboveCents');
    }
    const priced = input as PricedOrder;
    const total = priced.pricing.totalCents;
    const amount = (cents: number) => `${formatCents(cents)} ${priced.currency}`;
    const [decision, reason] =
      total < params.autoApproveBelowCents
        ? ['auto-approve', `total ${amount(total)} is below ${amount(params.autoApproveBelowCents)}`]
        : total > params.rejectAboveCents
          ? ['reject', `total ${amount(total)} is above ${amount(params.rejectAboveCents)}`]
          : ['manager-review', `total ${amount(total)} is between ${amount(params.autoApproveBelowCents)} and ${amount(params.rejectAboveCents)}`];
    return {
      output: { orderId: priced.orderId, customerId: priced.customer.id, currency: priced.currency, totalCents: total, decision, reason },
      action: decision,
    };
  },
});
