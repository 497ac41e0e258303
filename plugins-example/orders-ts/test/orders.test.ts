// The orders-ts nodes through the SDK's test host: the same cases as the Rust
// bundle's unit tests.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidInputError } from 'flowcraft-node';
import { TestHost } from 'flowcraft-node/testing';
import bundle from '../src/index.ts';

test('validate-order normalizes a good order', async () => {
  const order = {
    orderId: ' ORD-7 ',
    customer: { id: 'C-1', name: ' Ada ', email: 'ada@example.com' },
    items: [
      { sku: 'kb-101', quantity: 2, unitPriceCents: 8900 },
      { sku: 'KB-101 ', quantity: 1, unitPriceCents: 8900 },
      { sku: 'mn-270', quantity: 1, unitPriceCents: 27900 },
    ],
  };
  const { output } = await new TestHost().execute(bundle, 'validate-order', { input: order });
  assert.deepEqual(output, {
    orderId: 'ORD-7',
    customer: { id: 'C-1', name: 'Ada', email: 'ada@example.com' },
    currency: 'EUR',
    items: [
      { sku: 'KB-101', quantity: 3, unitPriceCents: 8900 },
      { sku: 'MN-270', quantity: 1, unitPriceCents: 27900 },
    ],
  });
});

test('validate-order reports every problem at once', async () => {
  const order = {
    orderId: 'ORD-8',
    customer: { id: ' ', email: 'nope' },
    currency: 'euro',
    items: [
      { sku: '', quantity: 0, unitPriceCents: -5 },
      { sku: 'A', quantity: 1, unitPriceCents: 1 },
      { sku: 'a', quantity: 1, unitPriceCents: 2 },
    ],
  };
  await assert.rejects(new TestHost().execute(bundle, 'validate-order', { input: order }), {
    name: 'InvalidInputError',
    message:
      'order `ORD-8` is invalid: customer.id is empty; customer.email `nope` is not an e-mail address; ' +
      'currency `EURO` is not a three-letter code; items[0].sku is empty; items[0].quantity 0 is not between 1 and 1000; ' +
      'items[0].unitPriceCents is negative; items[2]: SKU A appears twice with different prices',
  });
});

test('validate-order calls garbage invalid input', async () => {
  await assert.rejects(new TestHost().execute(bundle, 'validate-order', { input: 'not an order' }), InvalidInputError);
});

const order = (unitPriceCents: number) => ({
  orderId: 'ORD-1',
  customer: { id: 'C-1' },
  currency: 'EUR',
  items: [{ sku: 'A', quantity: 2, unitPriceCents }],
});

test('price-order applies the best reached tier, then tax', async () => {
  const params = {
    taxPercent: 20,
    discounts: [
      { minSubtotalCents: 10000, percent: 5 },
      { minSubtotalCents: 50000, percent: 10 },
      { minSubtotalCents: 900000, percent: 20 },
    ],
  };
  const { output } = await new TestHost().execute(bundle, 'price-order', { input: order(30000), params });
  assert.deepEqual((output as { pricing: unknown }).pricing, {
    subtotalCents: 60000,
    discountPercent: 10,
    discountCents: 6000,
    taxPercent: 20,
    taxCents: 10800,
    totalCents: 64800,
  });
});

test('price-order rounds tax to cents and refuses impossible percentages', async () => {
  const { output } = await new TestHost().execute(bundle, 'price-order', { input: order(333), params: { taxPercent: 7.5 } });
  assert.equal((output as { pricing: { totalCents: number } }).pricing.totalCents, 716);
  await assert.rejects(new TestHost().execute(bundle, 'price-order', { input: order(1), params: { taxPercent: 120 } }), {
    message: 'params.taxPercent 120 is not between 0 and 100',
  });
});

test('route-approval routes by total and explains why', async () => {
  const route = (totalCents: number) =>
    new TestHost().execute(bundle, 'route-approval', {
      input: { orderId: 'ORD-1', customer: { id: 'C-1' }, currency: 'EUR', items: [], pricing: { totalCents } },
      params: { autoApproveBelowCents: 100000, rejectAboveCents: 2500000 },
    });
  assert.equal((await route(99999)).action, 'auto-approve');
  assert.equal((await route(100000)).action, 'manager-review');
  assert.equal((await route(2500001)).action, 'reject');
  assert.deepEqual((await route(145350)).output, {
    orderId: 'ORD-1',
    customerId: 'C-1',
    currency: 'EUR',
    totalCents: 145350,
    decision: 'manager-review',
    reason: 'total 1453.50 EUR is between 1000.00 EUR and 25000.00 EUR',
  });
});

test('notify records the status and outputs a message on the configured channel', async () => {
  const host = new TestHost({ nowMs: 1000, config: { 'notify-channel': 'email' } });
  const { output } = await host.execute(bundle, 'notify', {
    input: { orderId: 'ORD-1', currency: 'EUR', totalCents: 94050, decision: 'auto-approve' },
    params: { status: 'approved' },
  });
  assert.deepEqual(output, { channel: 'email', message: 'Order ORD-1 approved: total 940.50 EUR' });
  assert.deepEqual(host.get('orderStatus'), { orderId: 'ORD-1', status: 'approved', updatedAtMs: 1000 });
  assert.equal(host.logs[0]?.message, 'Order ORD-1 approved: total 940.50 EUR');
});
