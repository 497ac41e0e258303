//! `notify`: records the order's final status in the run context and outputs
//! the notification it would send (the channel is the `notify-channel`
//! configuration value granted to the bundle, `log` without one).

use flowcraft_sdk::{Context, Level, NodeError, Output};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::order::format_cents;

/// The context key holding the order's status.
pub const STATUS_KEY: &str = "orderStatus";
const CHANNEL_CONFIG: &str = "notify-channel";

/// The parts of a `route-approval` output this node needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routed {
    order_id: String,
    currency: String,
    total_cents: u64,
}

#[derive(Deserialize)]
pub struct NotifyParams {
    /// The status to record, e.g. "approved".
    status: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderStatus<'a> {
    order_id: &'a str,
    status: &'a str,
    updated_at_ms: u64,
}

#[derive(Serialize)]
pub struct Notification {
    channel: String,
    message: String,
}

pub fn notify(
    ctx: &mut Context,
    routed: Routed,
    params: NotifyParams,
) -> Result<Output<Notification>, NodeError> {
    let status = OrderStatus {
        order_id: &routed.order_id,
        status: &params.status,
        updated_at_ms: ctx.now_ms(),
    };
    ctx.set(STATUS_KEY, &status)?;
    let channel = ctx
        .config(CHANNEL_CONFIG)
        .unwrap_or_else(|| "log".to_owned());
    let message = format!(
        "Order {} {}: total {} {}",
        routed.order_id,
        params.status,
        format_cents(routed.total_cents),
        routed.currency
    );
    ctx.log(
        Level::Info,
        &message,
        json!({ "orderId": routed.order_id, "status": params.status, "channel": channel }),
    );
    Ok(Output::new(Notification { channel, message }))
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::STATUS_KEY;
    use crate::BUNDLE;

    #[test]
    fn records_the_status_and_outputs_a_message() {
        let host = TestHost::new()
            .with_now_ms(1_000)
            .with_config("notify-channel", "email");
        let call = Call::new("notify")
            .input(json!({"orderId": "ORD-1", "currency": "EUR", "totalCents": 94050, "decision": "auto-approve"}))
            .params(json!({"status": "approved"}));
        let output = host.execute(&BUNDLE, call).unwrap().output;
        assert_eq!(
            output,
            Some(json!({"channel": "email", "message": "Order ORD-1 approved: total 940.50 EUR"}))
        );
        assert_eq!(
            host.get(STATUS_KEY),
            Some(json!({"orderId": "ORD-1", "status": "approved", "updatedAtMs": 1000}))
        );
        assert_eq!(
            host.logs()[0].message,
            "Order ORD-1 approved: total 940.50 EUR"
        );
    }
}
