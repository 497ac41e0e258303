//! Static analysis of a blueprint's graph: start and terminal nodes, cycles,
//! predecessor and successor sets, fallback-only nodes and loop bodies, and
//! indexes of nodes by id and of edges by source.
//!
//! Computed once per blueprint load ([`Analysis::of`]) and shared by every run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::blueprint::{Blueprint, EdgeDefinition, NodeDefinition};
use crate::builtin::Builtin;

/// What the engine needs to know about a blueprint's shape.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Nodes with no incoming edge, minus fallback-only nodes, in node order.
    pub start_nodes: Vec<String>,
    /// Nodes with no outgoing edge, in node order.
    pub terminal_nodes: Vec<String>,
    /// Nodes that are someone's `fallback` and have no incoming edge.
    pub fallback_only: BTreeSet<String>,
    /// Each cycle found, as node ids in discovery order.
    pub cycles: Vec<Vec<String>>,
    /// Distinct source ids of each node's incoming edges.
    pub predecessors: HashMap<String, BTreeSet<String>>,
    /// For each loop controller: the nodes re-armed when it continues.
    pub loop_bodies: HashMap<String, BTreeSet<String>>,
    /// Position in `blueprint.nodes` of each node id (its first occurrence),
    /// so that a job finds its node without scanning the blueprint.
    pub node_index: HashMap<String, usize>,
    /// Positions in `blueprint.edges` of the edges leaving each node, in
    /// declaration order.
    pub outgoing: HashMap<String, Vec<usize>>,
}

impl Analysis {
    /// Analyses `blueprint`.
    pub fn of(blueprint: &Blueprint) -> Self {
        let ids: Vec<&str> = blueprint.nodes.iter().map(|n| n.id.as_str()).collect();
        let mut predecessors: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut has_incoming = HashSet::new();
        let mut has_outgoing = HashSet::new();
        let mut outgoing: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, edge) in blueprint.edges.iter().enumerate() {
            outgoing.entry(edge.source.clone()).or_default().push(index);
            has_incoming.insert(edge.target.as_str());
            has_outgoing.insert(edge.source.as_str());
            predecessors
                .entry(edge.target.clone())
                .or_default()
                .insert(edge.source.clone());
        }
        let fallbacks: HashSet<&str> = blueprint
            .nodes
            .iter()
            .filter_map(|node| node.fallback())
            .collect();
        let fallback_only: BTreeSet<String> = ids
            .iter()
            .filter(|id| fallbacks.contains(*id) && !has_incoming.contains(*id))
            .map(|id| id.to_string())
            .collect();
        let cycles = find_cycles(blueprint);
        let mut start_nodes: Vec<String> = ids
            .iter()
            .filter(|id| !has_incoming.contains(*id) && !fallback_only.contains(**id))
            .map(|id| id.to_string())
            .collect();
        if start_nodes.is_empty() {
            start_nodes = cycle_entries(blueprint, &cycles);
        }
        let terminal_nodes = ids
            .iter()
            .filter(|id| !has_outgoing.contains(*id))
            .map(|id| id.to_string())
            .collect();
        let loop_bodies = blueprint
            .nodes
            .iter()
            .filter(|node| node.uses == Builtin::LoopController.as_str())
            .map(|node| (node.id.clone(), loop_body(blueprint, &node.id)))
            .collect();
        let mut node_index = HashMap::new();
        for (index, node) in blueprint.nodes.iter().enumerate() {
            node_index.entry(node.id.clone()).or_insert(index);
        }
        Self {
            start_nodes,
            terminal_nodes,
            fallback_only,
            cycles,
            predecessors,
            loop_bodies,
            node_index,
            outgoing,
        }
    }

    /// The node of `blueprint` (the one analysed) with this id, if any.
    pub fn node<'a>(&self, blueprint: &'a Blueprint, id: &str) -> Option<&'a NodeDefinition> {
        self.node_index
            .get(id)
            .map(|&index| &blueprint.nodes[index])
    }

    /// The edges of `blueprint` (the one analysed) leaving `source`, with
    /// their positions, in declaration order.
    pub fn edges_from<'a>(
        &'a self,
        blueprint: &'a Blueprint,
        source: &str,
    ) -> impl Iterator<Item = (usize, &'a EdgeDefinition)> + 'a {
        self.outgoing
            .get(source)
            .into_iter()
            .flatten()
            .map(|&index| (index, &blueprint.edges[index]))
    }

    /// Whether the graph has no cycle.
    pub fn is_dag(&self) -> bool {
        self.cycles.is_empty()
    }
}

/// Cycles by iterative depth-first search over edges in declaration order.
fn find_cycles(blueprint: &Blueprint) -> Vec<Vec<String>> {
    let mut successors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for edge in &blueprint.edges {
        successors
            .entry(edge.source.as_str())
            .or_default()
            .push(edge.target.as_str());
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = blueprint
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), Mark::New))
        .collect();
    let mut cycles = Vec::new();
    for root in blueprint.nodes.iter().map(|n| n.id.as_str()) {
        if marks.get(root) != Some(&Mark::New) {
            continue;
        }
        let mut path: Vec<&str> = vec![root];
        let mut cursors: Vec<usize> = vec![0];
        marks.insert(root, Mark::OnStack);
        while let Some(&node) = path.last() {
            let cursor = cursors.last_mut().expect("cursor per path entry");
            let next = successors.get(node).and_then(|s| s.get(*cursor)).copied();
            *cursor += 1;
            match next {
                Some(target) => match marks.get(target).copied() {
                    Some(Mark::New) => {
                        marks.insert(target, Mark::OnStack);
                        path.push(target);
                        cursors.push(0);
                    }
                    Some(Mark::OnStack) => {
                        let from = path.iter().position(|n| *n == target).unwrap_or(0);
                        cycles.push(path[from..].iter().map(|n| n.to_string()).collect());
                    }
                    _ => {}
                },
                None => {
                    marks.insert(node, Mark::Done);
                    path.pop();
                    cursors.pop();
                }
            }
        }
    }
    cycles
}

/// Entry nodes when no node lacks predecessors: per cycle, the first member
/// listed in `metadata.cycleEntryPoints`, else the cycle's first node.
fn cycle_entries(blueprint: &Blueprint, cycles: &[Vec<String>]) -> Vec<String> {
    let preferred = blueprint.cycle_entry_points();
    let mut entries: Vec<String> = Vec::new();
    for cycle in cycles {
        let entry = preferred
            .iter()
            .find(|id| cycle.iter().any(|member| member == *id))
            .map(|id| id.to_string())
            .or_else(|| cycle.first().cloned());
        if let Some(entry) = entry
            && !entries.contains(&entry)
        {
            entries.push(entry);
        }
    }
    entries
}

/// The continue target of a loop controller plus everything reachable from it
/// without passing through another loop controller.
fn loop_body(blueprint: &Blueprint, controller: &str) -> BTreeSet<String> {
    let is_controller = |id: &str| {
        blueprint
            .node(id)
            .is_some_and(|node| node.uses == Builtin::LoopController.as_str())
    };
    let mut body = BTreeSet::new();
    let mut stack: Vec<&str> = blueprint
        .edges
        .iter()
        .filter(|e| e.source == controller && e.action.as_deref() == Some("continue"))
        .map(|e| e.target.as_str())
        .collect();
    while let Some(id) = stack.pop() {
        if is_controller(id) || !body.insert(id.to_string()) {
            continue;
        }
        stack.extend(
            blueprint
                .edges
                .iter()
                .filter(|e| e.source == id)
                .map(|e| e.target.as_str()),
        );
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blueprint(text: &str) -> Blueprint {
        Blueprint::from_json(text).unwrap()
    }

    #[test]
    fn start_nodes_exclude_fallback_only_nodes() {
        let analysis = Analysis::of(&blueprint(
            r#"{"id":"b","nodes":[{"id":"S","uses":"x"},{"id":"A","uses":"x","config":{"fallback":"FB"}},
               {"id":"FB","uses":"x"},{"id":"E","uses":"x"}],
               "edges":[{"source":"S","target":"A"},{"source":"A","target":"E"}]}"#,
        ));
        assert_eq!(analysis.start_nodes, vec!["S"]);
        assert_eq!(analysis.terminal_nodes, vec!["FB", "E"]);
        assert!(analysis.fallback_only.contains("FB"));
    }

    #[test]
    fn start_less_cycles_enter_at_the_preferred_node() {
        let plain = blueprint(
            r#"{"id":"b","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"x"}],
               "edges":[{"source":"A","target":"B"},{"source":"B","target":"A"}]}"#,
        );
        assert_eq!(Analysis::of(&plain).start_nodes, vec!["A"]);
        assert!(!Analysis::of(&plain).is_dag());
        let mut preferred = plain.clone();
        preferred.metadata = Some(serde_json::from_str(r#"{"cycleEntryPoints":["B"]}"#).unwrap());
        assert_eq!(Analysis::of(&preferred).start_nodes, vec!["B"]);
    }

    #[test]
    fn loop_body_stops_at_the_controller() {
        let analysis = Analysis::of(&blueprint(
            r#"{"id":"b","nodes":[{"id":"init","uses":"x"},{"id":"inc","uses":"x"},{"id":"log","uses":"x"},
               {"id":"L","uses":"loop-controller"},{"id":"done","uses":"x"}],
               "edges":[{"source":"init","target":"L"},{"source":"inc","target":"L"},{"source":"inc","target":"log"},
               {"source":"L","target":"inc","action":"continue"},{"source":"L","target":"done","action":"break"}]}"#,
        ));
        let body: Vec<&str> = analysis.loop_bodies["L"]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(body, vec!["inc", "log"]);
        assert_eq!(
            analysis.predecessors["L"].iter().collect::<Vec<_>>(),
            vec!["inc", "init"]
        );
    }
}
