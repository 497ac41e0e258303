//! `route-approval`: decides by the order total whether it is approved
//! automatically, goes to a manager, or is rejected, and routes by that
//! decision as the action.

use flowcraft_sdk::{Context, NodeError, Output};
use serde::{Deserialize, Serialize};

use crate::order::{PricedOrder, format_cents};

/// JSON Schema of the params, reported by `describe`.
pub const ROUTE_PARAMS_SCHEMA: &str = r#"{"type":"object","required":["autoApproveBelowCents","rejectAboveCents"],"properties":{"autoApproveBelowCents":{"type":"integer","minimum":0},"rejectAboveCents":{"type":"integer","minimum":0}}}"#;

/// Totals below `auto_approve_below_cents` are approved, totals above
/// `reject_above_cents` rejected, the rest reviewed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParams {
    auto_approve_below_cents: u64,
    reject_above_cents: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    AutoApprove,
    ManagerReview,
    Reject,
}

impl Decision {
    /// The routing action; blueprint edges name it.
    fn action(self) -> &'static str {
        match self {
            Self::AutoApprove => "auto-approve",
            Self::ManagerReview => "manager-review",
            Self::Reject => "reject",
        }
    }
}

/// The output: what was decided about which order, and why.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    order_id: String,
    customer_id: String,
    currency: String,
    total_cents: u64,
    decision: &'static str,
    reason: String,
}

pub fn route_approval(
    _: &mut Context,
    priced: PricedOrder,
    params: RouteParams,
) -> Result<Output<Routing>, NodeError> {
    if params.auto_approve_below_cents > params.reject_above_cents {
        return Err(NodeError::invalid_input(
            "params.autoApproveBelowCents must not exceed params.rejectAboveCents",
        ));
    }
    let total = priced.pricing.total_cents;
    let currency = priced.order.currency;
    let amount = |cents| format!("{} {currency}", format_cents(cents));
    let (decision, reason) = if total < params.auto_approve_below_cents {
        let limit = amount(params.auto_approve_below_cents);
        (
            Decision::AutoApprove,
            format!("total {} is below {limit}", amount(total)),
        )
    } else if total > params.reject_above_cents {
        let limit = amount(params.reject_above_cents);
        (
            Decision::Reject,
            format!("total {} is above {limit}", amount(total)),
        )
    } else {
        let (low, high) = (
            amount(params.auto_approve_below_cents),
            amount(params.reject_above_cents),
        );
        (
            Decision::ManagerReview,
            format!("total {} is between {low} and {high}", amount(total)),
        )
    };
    Ok(Output::new(Routing {
        order_id: priced.order.order_id,
        customer_id: priced.order.customer.id,
        currency,
        total_cents: total,
        decision: decision.action(),
        reason,
    })
    .with_action(decision.action()))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::NodeError;
    use flowcraft_sdk::testing::{Call, TestHost, TestResult};
    use serde_json::json;

    use crate::BUNDLE;

    fn route(total_cents: u64) -> Result<TestResult, NodeError> {
        let priced = json!({
            "orderId": "ORD-1", "customer": {"id": "C-1"}, "currency": "EUR", "items": [],
            "pricing": {"subtotalCents": 0, "discountPercent": 0, "discountCents": 0,
                        "taxPercent": 0, "taxCents": 0, "totalCents": total_cents}
        });
        let params = json!({"autoApproveBelowCents": 100000, "rejectAboveCents": 2500000});
        TestHost::new().execute(
            &BUNDLE,
            Call::new("route-approval").input(priced).params(params),
        )
    }

    #[test]
    fn routes_by_total() {
        assert_eq!(
            route(99999).unwrap().action.as_deref(),
            Some("auto-approve")
        );
        assert_eq!(
            route(100000).unwrap().action.as_deref(),
            Some("manager-review")
        );
        assert_eq!(
            route(2500000).unwrap().action.as_deref(),
            Some("manager-review")
        );
        assert_eq!(route(2500001).unwrap().action.as_deref(), Some("reject"));
    }

    #[test]
    fn outputs_the_decision_and_reason() {
        let output = route(145350).unwrap().output.unwrap();
        assert_eq!(
            output,
            json!({"orderId": "ORD-1", "customerId": "C-1", "currency": "EUR", "totalCents": 145350,
                   "decision": "manager-review",
                   "reason": "total 1453.50 EUR is between 1000.00 EUR and 25000.00 EUR"})
        );
    }

    #[test]
    fn inverted_thresholds_are_invalid() {
        let call = Call::new("route-approval")
            .input(json!({}))
            .params(json!({"autoApproveBelowCents": 5, "rejectAboveCents": 1}));
        let error = TestHost::new().execute(&BUNDLE, call).unwrap_err();
        assert!(matches!(error, NodeError::InvalidInput(_)));
    }
}
