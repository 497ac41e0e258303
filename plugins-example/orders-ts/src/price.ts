/** `price-order`: adds subtotal, the best reached discount tier, tax and total to an order. */
import { defineNode, InvalidInputError } from 'flowcraft-node';
import type { Order, PricedOrder } from './order.ts';

interface PriceParams {
  taxPercent: number;
  discounts?: { minSubtotalCents: number; percent: number }[];
}

export const priceOrder = defineNode<Order, PriceParams, PricedOrder>({
  uses: 'price-order',
  description: 'Adds subtotal, tiered discount, tax and total to an order',
  run: ({ input, params, log }) => {
    const order = input as Order;
    const discounts = params.discounts ?? [];
    checkPercent('taxPercent', params.taxPercent);
    discounts.forEach((tier) => checkPercent('discounts[].percent', tier.percent));
    const subtotalCents = order.items.reduce((sum, item) => sum + item.quantity * item.unitPriceCents, 0);
    if (!Number.isSafeInteger(subtotalCents)) {
      throw new InvalidInputError(`order \`${order.orderId}\`: the subtotal overflows`);
    }
    const discountPercent = discounts
      .filter((tier) => subtotalCents >= tier.minSubtotalCents)
      .reduce((best, tier) => Math.max(best, tier.percent), 0);
    const discountCents = percentOf(subtotalCents, discountPercent);
    const discountedCents = subtotalCents - discountCents;
    const taxCents = percentOf(discountedCents, params.taxPercent);
    const pricing = {
      subtotalCents,
      discountPercent,
      discountCents,
      taxPercent: params.taxPercent,
      taxCents,
      totalCents: discountedCents + taxCents,
    };
    log.info('order priced', { orderId: order.orderId, totalCents: pricing.totalCents });
    return { output: { ...order, pricing } };
  },
});

function checkPercent(name: string, percent: number): void {
  if (!(typeof percent === 'number' && percent >= 0 && percent <= 100)) {
    throw new InvalidInputError(`params.${name} ${percent} is not between 0 and 100`);
  }
}

/** Rounded half away from zero, as the Rust bundle rounds. */
function percentOf(cents: number, percent: number): number {
  return Math.round((cents * percent) / 100);
}
