//! `price-order`: subtotal, the best discount tier the subtotal reaches, tax
//! on the discounted amount, and the total.

use flowcraft_sdk::{Context, Level, NodeError, Output};
use serde::Deserialize;
use serde_json::json;

use crate::order::{Order, PricedOrder, Pricing};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceParams {
    tax_percent: f64,
    #[serde(default)]
    discounts: Vec<DiscountTier>,
}

/// `percent` off when the subtotal is at least `min_subtotal_cents`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscountTier {
    min_subtotal_cents: u64,
    percent: f64,
}

pub fn price_order(
    ctx: &mut Context,
    order: Order,
    params: PriceParams,
) -> Result<Output<PricedOrder>, NodeError> {
    check_percent("taxPercent", params.tax_percent)?;
    for tier in &params.discounts {
        check_percent("discounts[].percent", tier.percent)?;
    }
    let subtotal_cents = order
        .items
        .iter()
        .try_fold(0u64, |sum, item| sum.checked_add(item.amount_cents()))
        .ok_or_else(|| {
            NodeError::invalid_input(format!(
                "order `{}`: the subtotal overflows",
                order.order_id
            ))
        })?;
    let discount_percent = params
        .discounts
        .iter()
        .filter(|tier| subtotal_cents >= tier.min_subtotal_cents)
        .map(|tier| tier.percent)
        .fold(0.0, f64::max);
    let discount_cents = percent_of(subtotal_cents, discount_percent);
    let discounted_cents = subtotal_cents - discount_cents;
    let tax_cents = percent_of(discounted_cents, params.tax_percent);
    let pricing = Pricing {
        subtotal_cents,
        discount_percent,
        discount_cents,
        tax_percent: params.tax_percent,
        tax_cents,
        total_cents: discounted_cents + tax_cents,
    };
    ctx.log(
        Level::Info,
        "order priced",
        json!({ "orderId": order.order_id, "totalCents": pricing.total_cents }),
    );
    Ok(Output::new(PricedOrder { order, pricing }))
}

fn check_percent(name: &str, percent: f64) -> Result<(), NodeError> {
    if (0.0..=100.0).contains(&percent) {
        Ok(())
    } else {
        Err(NodeError::invalid_input(format!(
            "params.{name} {percent} is not between 0 and 100"
        )))
    }
}

/// `percent` % of `cents`, rounded to the nearest cent. `percent` is within
/// 0..=100, so the result never exceeds `cents`.
fn percent_of(cents: u64, percent: f64) -> u64 {
    (cents as f64 * percent / 100.0).round() as u64
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::NodeError;
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::{Value, json};

    use crate::BUNDLE;

    fn order(unit_price_cents: u64) -> Value {
        json!({
            "orderId": "ORD-1", "customer": {"id": "C-1"}, "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2, "unitPriceCents": unit_price_cents}]
        })
    }

    fn price(order: Value, params: Value) -> Result<Value, NodeError> {
        let call = Call::new("price-order").input(order).params(params);
        TestHost::new()
            .execute(&BUNDLE, call)
            .map(|result| result.output.unwrap())
    }

    #[test]
    fn applies_the_best_reached_tier_then_tax() {
        let params = json!({"taxPercent": 20, "discounts": [
            {"minSubtotalCents": 10000, "percent": 5},
            {"minSubtotalCents": 50000, "percent": 10},
            {"minSubtotalCents": 900000, "percent": 20}
        ]});
        let priced = price(order(30000), params).unwrap();
        assert_eq!(
            priced["pricing"],
            json!({"subtotalCents": 60000, "discountPercent": 10.0, "discountCents": 6000,
                   "taxPercent": 20.0, "taxCents": 10800, "totalCents": 64800})
        );
        assert_eq!(priced["orderId"], "ORD-1");
    }

    #[test]
    fn no_tier_reached_means_no_discount_and_tax_rounds_to_cents() {
        let priced = price(order(333), json!({"taxPercent": 7.5})).unwrap();
        assert_eq!(priced["pricing"]["discountCents"], 0);
        assert_eq!(priced["pricing"]["taxCents"], 50);
        assert_eq!(priced["pricing"]["totalCents"], 716);
    }

    #[test]
    fn rejects_impossible_percentages() {
        let error = price(order(1), json!({"taxPercent": 120})).unwrap_err();
        assert_eq!(
            error,
            NodeError::invalid_input("params.taxPercent 120 is not between 0 and 100")
        );
    }
}
