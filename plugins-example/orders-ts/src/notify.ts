/** `notify`: records the order's status in the context (`orderStatus`) and outputs a notification on the configured channel. */
import { defineNode } from 'flowcraft-node';
import { formatCents } from './order.ts';

interface Routed {
  orderId: string;
  currency: string;
  totalCents: number;
}

interface OrderStatusContext {
  orderStatus: { orderId: string; status: string; updatedAtMs: number };
}

export const notify = defineNode<Routed, { status: string }, { channel: string; message: string }, OrderStatusContext>({
  uses: 'notify',
  description: "Records the order's status in the context and outputs a notification",
  run: ({ input, params, context, config, nowMs, log }) => {
    const routed = input as Routed;
    context.set('orderStatus', { orderId: routed.orderId, status: params.status, updatedAtMs: nowMs() });
    const channel = config('notify-channel') ?? 'log';
    const message = `Order ${routed.orderId} ${params.status}: total ${formatCents(routed.totalCents)} ${routed.currency}`;
    log.info(message, { orderId: routed.orderId, status: params.status, channel });
    return { output: { channel, message } };
  },
});
