/** The order records passed between the nodes, and money formatting. Money is in integer cents. */

export interface Customer {
  id: string;
  name?: string;
  email?: string;
}

export interface LineItem {
  /** Stock keeping unit, upper case. */
  sku: string;
  quantity: number;
  unitPriceCents: number;
}

/** A validated, normalized order (the output of `validate-order`). */
export interface Order {
  orderId: string;
  customer: Customer;
  /** ISO 4217 code, upper case. */
  currency: string;
  /** One line per SKU. */
  items: LineItem[];
}

export interface Pricing {
  subtotalCents: number;
  discountPercent: number;
  discountCents: number;
  taxPercent: number;
  taxCents: number;
  totalCents: number;
}

/** An order with its price (the output of `price-order`). */
export interface PricedOrder extends Order {
  pricing: Pricing;
}

/** `cents` as a decimal amount, e.g. `145350` → `"1453.50"`. */
export function formatCents(cents: number): string {
  return `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
}
