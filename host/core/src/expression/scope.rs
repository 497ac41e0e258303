//! What an expression can see: the [`Scope`] trait and the engine's scopes.

use std::fmt;

use serde_json::{Map, Value};

/// A value a [`Scope`] exposes under a top-level name.
#[derive(Debug, Clone)]
pub enum ScopeValue<'a> {
    /// A borrowed JSON value.
    Value(&'a Value),
    /// A borrowed JSON object (e.g. the whole run context as `context`).
    Object(&'a Map<String, Value>),
    /// A value computed for this lookup.
    Owned(Value),
}

/// The top-level names an expression can see.
///
/// `lookup` returning `None` means "not defined" (the name is `undefined`).
pub trait Scope {
    /// The value of top-level identifier `name` in the safe language.
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>>;

    /// The value of the first segment of a property-mode path: only keys the
    /// upstream scope object *owns*. Defaults to [`Scope::lookup`].
    fn lookup_property(&self, name: &str) -> Option<ScopeValue<'_>> {
        self.lookup(name)
    }
}

impl<T: Scope + ?Sized> Scope for &T {
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>> {
        (**self).lookup(name)
    }

    fn lookup_property(&self, name: &str) -> Option<ScopeValue<'_>> {
        (**self).lookup_property(name)
    }
}

/// A JSON object is a scope: its keys are the names.
impl Scope for Map<String, Value> {
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>> {
        self.get(name).map(ScopeValue::Value)
    }
}

/// A JSON value is a scope when it is an object; otherwise it defines nothing.
impl Scope for Value {
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>> {
        self.as_object()?.get(name).map(ScopeValue::Value)
    }
}

/// A scope that defines nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyScope;

impl Scope for EmptyScope {
    fn lookup(&self, _name: &str) -> Option<ScopeValue<'_>> {
        None
    }
}

/// How a [`ConditionScope`] resolves a node's output by its plain id.
#[derive(Clone, Copy, Default)]
pub enum PlainOutputs<'a> {
    /// Plain ids are not resolved.
    None,
    /// Plain id `X` is the context key `_outputs.X` of the same context (default).
    #[default]
    FromContext,
    /// Plain id `X` is key `X` of this map.
    Map(&'a Map<String, Value>),
    /// Plain id `X` is whatever this function returns.
    Lookup(&'a dyn Fn(&str) -> Option<&'a Value>),
}

impl fmt::Debug for PlainOutputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlainOutputs::None => f.write_str("None"),
            PlainOutputs::FromContext => f.write_str("FromContext"),
            PlainOutputs::Map(map) => f.debug_tuple("Map").field(&map.len()).finish(),
            PlainOutputs::Lookup(_) => f.write_str("Lookup(..)"),
        }
    }
}

impl<'a> PlainOutputs<'a> {
    fn get(&self, context: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
        match self {
            PlainOutputs::None => None,
            PlainOutputs::FromContext => context.get(&format!("_outputs.{name}")),
            PlainOutputs::Map(map) => map.get(name),
            PlainOutputs::Lookup(lookup) => lookup(name),
        }
    }
}

/// Scope of edge conditions and (with `result: None`) loop-controller
/// conditions.
///
/// Resolution order of a name:
/// 1. `result` → the node result (`{output, action, ...}`) when given; it
///    shadows a context key named `result`;
/// 2. a top-level context key;
/// 3. a node output by plain id ([`PlainOutputs`], default `_outputs.<name>`);
/// 4. `context` → the whole context map (safe mode only; upstream's property
///    scope has no `context` key).
#[derive(Debug, Clone, Copy)]
pub struct ConditionScope<'a> {
    pub context: &'a Map<String, Value>,
    pub result: Option<&'a Value>,
    pub outputs: PlainOutputs<'a>,
}

impl<'a> ConditionScope<'a> {
    /// An edge-condition scope (`result` = the source node's result), or a
    /// loop-controller scope with `result: None`. Plain ids resolve through
    /// `_outputs.<id>` of `context`.
    pub fn new(context: &'a Map<String, Value>, result: Option<&'a Value>) -> Self {
        ConditionScope {
            context,
            result,
            outputs: PlainOutputs::FromContext,
        }
    }

    /// The loop-controller scope: context keys and plain outputs, no `result`.
    pub fn for_loop_controller(context: &'a Map<String, Value>) -> Self {
        ConditionScope::new(context, None)
    }

    /// Replaces how plain node ids resolve.
    pub fn with_outputs(mut self, outputs: PlainOutputs<'a>) -> Self {
        self.outputs = outputs;
        self
    }

    fn own(&self, name: &str) -> Option<ScopeValue<'a>> {
        if name == "result"
            && let Some(result) = self.result
        {
            return Some(ScopeValue::Value(result));
        }
        if let Some(value) = self.context.get(name) {
            return Some(ScopeValue::Value(value));
        }
        self.outputs.get(self.context, name).map(ScopeValue::Value)
    }
}

impl Scope for ConditionScope<'_> {
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>> {
        self.own(name).or_else(|| match name {
            "context" => Some(ScopeValue::Object(self.context)),
            _ => None,
        })
    }

    fn lookup_property(&self, name: &str) -> Option<ScopeValue<'_>> {
        self.own(name)
    }
}

/// Scope of edge transforms: exactly `input` and `context`.
#[derive(Debug, Clone, Copy)]
pub struct TransformScope<'a> {
    /// The source output (or the `inputs` override); `None` is `undefined`.
    pub input: Option<&'a Value>,
    /// The whole run context.
    pub context: &'a Map<String, Value>,
}

impl<'a> TransformScope<'a> {
    pub fn new(input: Option<&'a Value>, context: &'a Map<String, Value>) -> Self {
        TransformScope { input, context }
    }
}

impl Scope for TransformScope<'_> {
    fn lookup(&self, name: &str) -> Option<ScopeValue<'_>> {
        match name {
            "input" => self.input.map(ScopeValue::Value),
            "context" => Some(ScopeValue::Object(self.context)),
            _ => None,
        }
    }
}
