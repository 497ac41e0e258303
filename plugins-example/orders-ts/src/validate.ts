/**
 * `validate-order`: checks a submitted order and outputs it normalized
 * (trimmed, upper-case SKUs and currency, one line per SKU). Every problem
 * found is reported in one invalid-input error.
 */
import { defineNode, InvalidInputError } from 'flowcraft-node';
import type { Customer, LineItem, Order } from './order.ts';

/** An order as a client submits it. */
interface SubmittedOrder {
  orderId: string;
  customer: Customer;
  currency?: string;
  items: { sku: string; quantity: number; unitPriceCents: number }[];
}

interface ValidateParams {
  /** Used when the order names no currency (default EUR). */
  defaultCurrency?: string;
  /** The most units one line may order (default 1000). */
  maxQuantityPerLine?: number;
}

export const validateOrder = defineNode<SubmittedOrder, ValidateParams, Order>({
  uses: 'validate-order',
  description: 'Checks a submitted order and outputs it normalized',
  run: ({ input, params, log }) => {
    const submitted = checkShape(input);
    const problems: string[] = [];
    const orderId = submitted.orderId.trim();
    if (orderId === '') {
      problems.push('orderId is empty');
    }
    const customer = normalizeCustomer(submitted.customer, problems);
    const currency = (submitted.currency ?? params.defaultCurrency ?? 'EUR').trim().toUpperCase();
    if (!/^[A-Z]{3}$/.test(currency)) {
      problems.push(`currency \`${currency}\` is not a three-letter code`);
    }
    const items = normalizeItems(submitted.items, params.maxQuantityPerLine ?? 1000, problems);
    if (problems.length > 0) {
      throw new InvalidInputError(`order \`${orderId}\` is invalid: ${problems.join('; ')}`);
    }
    log.info('order validated', { orderId, lines: items.length, currency });
    return { output: { orderId, customer, currency, items } };
  },
});

/** The fields every later check relies on, with one message naming what is missing. */
function checkShape(input: unknown): SubmittedOrder {
  const order = input as Partial<SubmittedOrder> | undefined;
  const fine =
    typeof order === 'object' &&
    order !== null &&
    typeof order.orderId === 'string' &&
    typeof order.customer?.id === 'string' &&
    Array.isArray(order.items) &&
    order.items.every((item) => typeof item?.sku === 'string' && Number.isInteger(item.quantity) && Number.isInteger(item.unitPriceCents));
  if (!fine) {
    throw new InvalidInputError(
      'node "validate-order": invalid input: expected {orderId, customer: {id}, items: [{sku, quantity, unitPriceCents}]} with integer quantities and prices',
    );
  }
  return order as SubmittedOrder;
}

function normalizeCustomer(customer: Customer, problems: string[]): Customer {
  const id = customer.id.trim();
  if (id === '') {
    problems.push('customer.id is empty');
  }
  const email = customer.email?.trim();
  if (email !== undefined && !email.includes('@')) {
    problems.push(`customer.email \`${email}\` is not an e-mail address`);
  }
  const normalized: Customer = { id };
  if (customer.name !== undefined) normalized.name = customer.name.trim();
  if (email !== undefined) normalized.email = email;
  return normalized;
}

/** Checks each line and merges lines of the same SKU. */
function normalizeItems(submitted: SubmittedOrder['items'], maxQuantity: number, problems: string[]): LineItem[] {
  if (submitted.length === 0) {
    problems.push('the order has no items');
  }
  const items: LineItem[] = [];
  submitted.forEach((item, index) => {
    const sku = item.sku.trim().toUpperCase();
    if (sku === '') {
      problems.push(`items[${index}].sku is empty`);
    }
    const quantityFine = item.quantity >= 1 && item.quantity <= maxQuantity;
    if (!quantityFine) {
      problems.push(`items[${index}].quantity ${item.quantity} is not between 1 and ${maxQuantity}`);
    }
    if (item.unitPriceCents < 0) {
      problems.push(`items[${index}].unitPriceCents is negative`);
    }
    if (!quantityFine || item.unitPriceCents < 0) {
      return;
    }
    const line = items.find((existing) => existing.sku === sku);
    if (line === undefined) {
      items.push({ sku, quantity: item.quantity, unitPriceCents: item.unitPriceCents });
    } else if (line.unitPriceCents !== item.unitPriceCents) {
      problems.push(`items[${index}]: SKU ${sku} appears twice with different prices`);
    } else {
      line.quantity += item.quantity;
    }
  });
  return items;
}
