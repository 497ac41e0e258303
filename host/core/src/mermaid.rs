//! A blueprint as a Mermaid flowchart (for `flowcraft-host graph` and the
//! API), optionally coloured by the node states of a run.

use std::fmt::Write as _;

use crate::blueprint::Blueprint;
use crate::progress::{NodeStatus, RunProgress};

/// The flowchart of `blueprint`, its nodes coloured by their state in
/// `progress` if given. Mermaid node ids must be plain, so the nodes are
/// numbered.
pub fn mermaid(blueprint: &Blueprint, progress: Option<&RunProgress>) -> String {
    let index = |id: &str| blueprint.nodes.iter().position(|n| n.id == id);
    let mut out = String::from("flowchart TD\n");
    for (i, node) in blueprint.nodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "    n{i}[\"{}<br/><small>{}</small>\"]",
            escape(&node.id),
            escape(&node.uses)
        );
    }
    for edge in &blueprint.edges {
        let (Some(from), Some(to)) = (index(&edge.source), index(&edge.target)) else {
            continue;
        };
        let label: Vec<String> = [edge.action.as_deref(), edge.condition.as_deref()]
            .into_iter()
            .flatten()
            .map(escape)
            .collect();
        let arrow = if edge.condition.is_some() {
            "-.->"
        } else {
            "-->"
        };
        if label.is_empty() {
            let _ = writeln!(out, "    n{from} {arrow} n{to}");
        } else {
            let _ = writeln!(out, "    n{from} {arrow}|\"{}\"| n{to}", label.join(" / "));
        }
    }
    if let Some(progress) = progress {
        out.push_str(
            "    classDef done fill:#c8e6c9,stroke:#2e7d32\n    classDef failed fill:#ffcdd2,stroke:#c62828\n    classDef skipped fill:#eeeeee,stroke:#9e9e9e,color:#757575\n    classDef awaiting fill:#fff9c4,stroke:#f9a825\n    classDef scheduled fill:#bbdefb,stroke:#1565c0\n",
        );
        for (i, node) in blueprint.nodes.iter().enumerate() {
            let class = match progress.status(&node.id) {
                NodeStatus::Done => "done",
                NodeStatus::Failed => "failed",
                NodeStatus::Skipped => "skipped",
                NodeStatus::Awaiting => "awaiting",
                NodeStatus::Scheduled => "scheduled",
                NodeStatus::Waiting => continue,
            };
            let _ = writeln!(out, "    class n{i} {class}");
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_carry_actions_and_conditions() {
        let blueprint = Blueprint::from_json(
            r#"{"id":"b","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"y"}],
               "edges":[{"source":"A","target":"B","action":"ok","condition":"result.output > 1"}]}"#,
        )
        .unwrap();
        let chart = mermaid(&blueprint, None);
        assert!(chart.contains("n0[\"A<br/><small>x</small>\"]"));
        assert!(chart.contains("n0 -.->|\"ok / result.output #gt; 1\"| n1"));
    }
}
