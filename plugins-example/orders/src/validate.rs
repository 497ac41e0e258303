//! `validate-order`: checks a submitted order and outputs it normalized
//! (trimmed, upper-case SKUs and currency, one line per SKU). Every problem
//! found is reported in one invalid-input error.

use flowcraft_sdk::{Context, Level, NodeError, Output};
use serde::Deserialize;
use serde_json::json;

use crate::order::{Customer, LineItem, Order};

/// An order as a client submits it. Numbers are signed so that a negative
/// quantity gets a clear message instead of a decoding error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmittedOrder {
    order_id: String,
    customer: Customer,
    currency: Option<String>,
    items: Vec<SubmittedItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmittedItem {
    sku: String,
    quantity: i64,
    unit_price_cents: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValidateParams {
    /// Used when the order names no currency.
    default_currency: String,
    /// The most units one line may order.
    max_quantity_per_line: u32,
}

impl Default for ValidateParams {
    fn default() -> Self {
        Self {
            default_currency: "EUR".to_owned(),
            max_quantity_per_line: 1000,
        }
    }
}

pub fn validate_order(
    ctx: &mut Context,
    submitted: SubmittedOrder,
    params: ValidateParams,
) -> Result<Output<Order>, NodeError> {
    let mut problems = Vec::new();
    let order_id = submitted.order_id.trim().to_owned();
    if order_id.is_empty() {
        problems.push("orderId is empty".to_owned());
    }
    let customer = normalize_customer(submitted.customer, &mut problems);
    let currency = normalize_currency(submitted.currency, &params, &mut problems);
    let items = normalize_items(submitted.items, &params, &mut problems);
    if !problems.is_empty() {
        return Err(NodeError::invalid_input(format!(
            "order `{order_id}` is invalid: {}",
            problems.join("; ")
        )));
    }
    ctx.log(
        Level::Info,
        "order validated",
        json!({ "orderId": order_id, "lines": items.len(), "currency": currency }),
    );
    Ok(Output::new(Order {
        order_id,
        customer,
        currency,
        items,
    }))
}

fn normalize_customer(customer: Customer, problems: &mut Vec<String>) -> Customer {
    let id = customer.id.trim().to_owned();
    if id.is_empty() {
        problems.push("customer.id is empty".to_owned());
    }
    let email = customer.email.map(|email| email.trim().to_owned());
    if let Some(email) = email.as_deref().filter(|email| !email.contains('@')) {
        problems.push(format!("customer.email `{email}` is not an e-mail address"));
    }
    Customer {
        id,
        name: customer.name.map(|name| name.trim().to_owned()),
        email,
    }
}

fn normalize_currency(
    currency: Option<String>,
    params: &ValidateParams,
    problems: &mut Vec<String>,
) -> String {
    let currency = currency
        .unwrap_or_else(|| params.default_currency.clone())
        .trim()
        .to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
        problems.push(format!("currency `{currency}` is not a three-letter code"));
    }
    currency
}

/// Checks each line and merges lines of the same SKU.
fn normalize_items(
    submitted: Vec<SubmittedItem>,
    params: &ValidateParams,
    problems: &mut Vec<String>,
) -> Vec<LineItem> {
    if submitted.is_empty() {
        problems.push("the order has no items".to_owned());
    }
    let mut items: Vec<LineItem> = Vec::new();
    for (index, item) in submitted.into_iter().enumerate() {
        let sku = item.sku.trim().to_ascii_uppercase();
        if sku.is_empty() {
            problems.push(format!("items[{index}].sku is empty"));
        }
        let quantity = u32::try_from(item.quantity)
            .ok()
            .filter(|quantity| (1..=params.max_quantity_per_line).contains(quantity));
        if quantity.is_none() {
            problems.push(format!(
                "items[{index}].quantity {} is not between 1 and {}",
                item.quantity, params.max_quantity_per_line
            ));
        }
        let unit_price_cents = u64::try_from(item.unit_price_cents).ok();
        if unit_price_cents.is_none() {
            problems.push(format!("items[{index}].unitPriceCents is negative"));
        }
        let (Some(quantity), Some(unit_price_cents)) = (quantity, unit_price_cents) else {
            continue;
        };
        match items.iter_mut().find(|line| line.sku == sku) {
            Some(line) if line.unit_price_cents != unit_price_cents => problems.push(format!(
                "items[{index}]: SKU {sku} appears twice with different prices"
            )),
            Some(line) => line.quantity = line.quantity.saturating_add(quantity),
            None => items.push(LineItem {
                sku,
                quantity,
                unit_price_cents,
            }),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::NodeError;
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::{Value, json};

    use crate::BUNDLE;

    fn validate(order: Value) -> Result<Option<Value>, NodeError> {
        let call = Call::new("validate-order").input(order).params(json!({}));
        TestHost::new()
            .execute(&BUNDLE, call)
            .map(|result| result.output)
    }

    #[test]
    fn normalizes_a_good_order() {
        let order = json!({
            "orderId": " ORD-7 ",
            "customer": {"id": "C-1", "name": " Ada ", "email": "ada@example.com"},
            "items": [
                {"sku": "kb-101", "quantity": 2, "unitPriceCents": 8900},
                {"sku": "KB-101 ", "quantity": 1, "unitPriceCents": 8900},
                {"sku": "mn-270", "quantity": 1, "unitPriceCents": 27900}
            ]
        });
        let expected = json!({
            "orderId": "ORD-7",
            "customer": {"id": "C-1", "name": "Ada", "email": "ada@example.com"},
            "currency": "EUR",
            "items": [
                {"sku": "KB-101", "quantity": 3, "unitPriceCents": 8900},
                {"sku": "MN-270", "quantity": 1, "unitPriceCents": 27900}
            ]
        });
        assert_eq!(validate(order).unwrap(), Some(expected));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let order = json!({
            "orderId": "ORD-8",
            "customer": {"id": " ", "email": "nope"},
            "currency": "euro",
            "items": [
                {"sku": "", "quantity": 0, "unitPriceCents": -5},
                {"sku": "A", "quantity": 1, "unitPriceCents": 1},
                {"sku": "a", "quantity": 1, "unitPriceCents": 2}
            ]
        });
        let error = validate(order).unwrap_err();
        assert_eq!(
            error,
            NodeError::invalid_input(
                "order `ORD-8` is invalid: customer.id is empty; \
                 customer.email `nope` is not an e-mail address; \
                 currency `EURO` is not a three-letter code; items[0].sku is empty; \
                 items[0].quantity 0 is not between 1 and 1000; \
                 items[0].unitPriceCents is negative; \
                 items[2]: SKU A appears twice with different prices"
            )
        );
    }

    #[test]
    fn garbage_is_invalid_input_naming_the_node() {
        let error = validate(json!("not an order")).unwrap_err();
        assert!(
            matches!(&error, NodeError::InvalidInput(m) if m.starts_with("node `validate-order`: invalid input")),
            "{error}"
        );
        let no_items =
            validate(json!({"orderId": "X", "customer": {"id": "C"}, "items": []})).unwrap_err();
        assert_eq!(
            no_items,
            NodeError::invalid_input("order `X` is invalid: the order has no items")
        );
    }
}
