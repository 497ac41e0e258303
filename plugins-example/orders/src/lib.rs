//! The orders bundle: the README demo of an order-approval workflow.
//!
//! `validate-order` → `price-order` → `route-approval`, which routes by action
//! (`auto-approve`, `manager-review`, `reject`) to a `notify` node per outcome.
//! The blueprint and an example run context are in `blueprints/`.
//! Money is in integer cents throughout.

mod notify;
mod order;
mod price;
mod route;
mod validate;

use notify::notify;
use price::price_order;
use route::{ROUTE_PARAMS_SCHEMA, route_approval};
use validate::validate_order;

flowcraft_sdk::export_bundle! {
    nodes: [
        ("validate-order", "Checks a submitted order and outputs it normalized", validate_order),
        ("price-order", "Adds subtotal, tiered discount, tax and total to an order", price_order),
        ("route-approval", "Routes a priced order: action auto-approve, manager-review or reject", route_approval,
            params_schema: ROUTE_PARAMS_SCHEMA),
        ("notify", "Records the order's status in the context and outputs a notification", notify),
    ]
}
