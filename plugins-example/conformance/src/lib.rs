//! The conformance bundle: the node behaviours that the cases of
//! `reference/conformance.md` use ("Node behaviours used"), under exactly the
//! `uses` keys the cases name. The host's conformance tests run blueprints
//! against this bundle.

mod arithmetic;
mod context_nodes;
mod failures;
mod timing;
mod values;

use arithmetic::{double, sum, times10};
use context_nodes::{del_tmp, inc, many, read_key, read_resume, set_key};
use failures::{fail, fatal, flaky};
use timing::slow;
use values::{act, const_node, echo, no_output, spawn, with_error_field};

flowcraft_sdk::export_bundle! {
    nodes: [
        ("const", "Outputs params.value", const_node),
        ("echo", "Outputs its input", echo),
        ("double", "Outputs its numeric input times 2", double),
        ("times10", "Outputs its numeric input times 10", times10),
        ("sum", "Outputs the sum of its input array (no input: 0)", sum),
        ("fail", "Fails with the retryable error \"boom\"", fail),
        ("fatal", "Fails with the fatal error \"fatal!\"", fatal),
        ("flaky", "Fails while the attempt number is below params.succeedOn, then outputs \"ok@<attempt>\"", flaky),
        ("act", "Outputs params.value with action params.action", act),
        ("setKey", "Writes params.value to context key params.key and outputs it", set_key),
        ("readKey", "Outputs context key params.key", read_key),
        ("inc", "Increments context key count and sets keepGoing = count < params.limit", inc),
        ("slow", "Waits params.ms milliseconds, then outputs \"slow-done\"", slow),
        ("noOutput", "Returns no output", no_output),
        ("spawn", "Outputs \"spawned\" and adds dynamic nodes d1 and d2 (const x, const y)", spawn),
        ("readResume", "Outputs {action, output} from context keys _resume.action and _resume.output", read_resume),
        ("withErrorField", "Outputs \"x\" (upstream also returned an ignored error field)", with_error_field),
        ("many", "Writes context keys k0..k10 and outputs \"many\"", many),
        ("delTmp", "Deletes context key tmp and outputs \"deleted\"", del_tmp),
    ]
}
