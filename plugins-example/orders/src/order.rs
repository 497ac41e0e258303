//! The order records passed between the nodes, and money formatting.

use serde::{Deserialize, Serialize};

/// A validated, normalized order (the output of `validate-order`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    pub customer: Customer,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// One line per SKU.
    pub items: Vec<LineItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    /// Stock keeping unit, upper case.
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

impl LineItem {
    pub fn amount_cents(&self) -> u64 {
        u64::from(self.quantity) * self.unit_price_cents
    }
}

/// An order with its price (the output of `price-order`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PricedOrder {
    #[serde(flatten)]
    pub order: Order,
    pub pricing: Pricing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    pub subtotal_cents: u64,
    pub discount_percent: f64,
    pub discount_cents: u64,
    pub tax_percent: f64,
    pub tax_cents: u64,
    pub total_cents: u64,
}

/// `cents` as a decimal amount, e.g. `145350` → `"1453.50"`.
pub fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::format_cents;

    #[test]
    fn formats_cents_with_two_decimals() {
        assert_eq!(format_cents(145_350), "1453.50");
        assert_eq!(format_cents(7), "0.07");
    }
}
