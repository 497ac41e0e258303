//! The `{{name}}` bundle: flowcraft-host node types written with `flowcraft-sdk`.

use flowcraft_sdk::{Context, Level, NodeError, Output};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(default)]
struct GreetParams {
    greeting: String,
}

impl Default for GreetParams {
    fn default() -> Self {
        Self { greeting: "Hello".to_owned() }
    }
}

/// Greets its input, a name, and counts greetings in the run context.
fn greet(ctx: &mut Context, name: String, params: GreetParams) -> Result<Output<String>, NodeError> {
    if name.trim().is_empty() {
        return Err(NodeError::invalid_input("greet needs a name (a non-empty string) as its input"));
    }
    let greetings = ctx.get::<u64>("greetings")?.unwrap_or(0) + 1;
    ctx.set("greetings", &greetings)?;
    ctx.log(Level::Info, "greeting", json!({ "name": name, "greetings": greetings }));
    Ok(Output::new(format!("{}, {name}!", params.greeting)))
}

flowcraft_sdk::export_bundle! {
    nodes: [
        ("greet", "Greets its input (a name)", greet),
    ]
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use flowcraft_sdk::NodeError;
    use serde_json::json;

    use super::BUNDLE;

    #[test]
    fn greets_and_counts() {
        let host = TestHost::new().with_value("greetings", 2);
        let result = host.execute(&BUNDLE, Call::new("greet").input(json!("Ada"))).unwrap();
        assert_eq!(result.output, Some(json!("Hello, Ada!")));
        assert_eq!(host.get("greetings"), Some(json!(3)));
    }

    #[test]
    fn an_empty_name_is_invalid_input() {
        let error = TestHost::new().execute(&BUNDLE, Call::new("greet").input(json!(" "))).unwrap_err();
        assert!(matches!(error, NodeError::InvalidInput(_)));
    }
}
