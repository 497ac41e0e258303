"""The component glue against the real bindings componentize-py generates for
wit/node.wit, with the host imports wired to the in-memory host."""

import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from flowcraft_node import Bundle, Level
from flowcraft_node.build import componentize_py_command
from flowcraft_node.testing import _MemoryHost


@pytest.fixture(scope="module")
def component(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """``flowcraft_node._component``, importable once the bindings exist."""
    bindings = tmp_path_factory.mktemp("bindings")
    subprocess.run(componentize_py_command("bindings", str(bindings)), check=True)
    sys.path.insert(0, str(bindings))
    try:
        import flowcraft_node._component as module

        yield module
    finally:
        sys.path.remove(str(bindings))


@pytest.fixture
def memory(component: ModuleType, monkeypatch: pytest.MonkeyPatch) -> _MemoryHost:
    """The generated import stubs, answered by an in-memory host."""
    from componentize_py_types import Err

    memory = _MemoryHost(values={"seen": "4"}, config={"greeting": "Hi"}, pinned_now_ms=99)
    imports = component.imports
    for name in ("context_get", "context_has", "context_delete", "context_keys", "now_ms", "config_get"):
        monkeypatch.setattr(imports, name, getattr(memory, name))

    def context_set(key: str, value: str) -> None:
        refusal = memory.context_set(key, value)
        if refusal is not None:
            raise Err(refusal)

    def log(level: Any, message: str, fields: str) -> None:
        assert isinstance(level, component.wit.LogLevel)
        memory.log(Level[level.name], message, fields)

    monkeypatch.setattr(imports, "context_set", context_set)
    monkeypatch.setattr(imports, "log", log)
    return memory


def request(component: ModuleType, uses: str, input: str | None = None, params: str = "{}") -> Any:
    return component.wit.Request(
        uses=uses, run_id="run-1", node_id="n1", blueprint_id="bp", attempt=2, input=input, params=params
    )


def test_describe_reports_identity_and_node_types(component: ModuleType, bundle: Bundle) -> None:
    exported = component.export(Bundle(bundle.nodes[:2]), name="sample-py", version="0.3.0")
    info = exported().describe()
    assert (info.name, info.version) == ("sample-py", "0.3.0")
    assert [(n.uses, n.description, n.params_schema) for n in info.nodes] == [
        ("echo", "Returns its input", None),
        ("describe-call", "Returns what it was called with.", None),
    ]


def test_a_bundle_s_own_identity_wins_and_schemas_are_json_text(component: ModuleType) -> None:
    from flowcraft_node import node

    schema_node = node("s", params_schema={"type": "object", "required": ["x"]})(lambda ctx, value, params: None)
    info = component.export(Bundle([schema_node], name="own", version="9.9.9"), "ignored", "0.0.0")().describe()
    assert (info.name, info.version) == ("own", "9.9.9")
    assert info.nodes[0].params_schema == '{"type":"object","required":["x"]}'


def test_export_needs_a_bundle(component: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"expected a flowcraft_node\.Bundle, got list"):
        component.export([], "n", "1")


def test_execute_returns_a_node_result(component: ModuleType, bundle: Bundle, memory: _MemoryHost) -> None:
    node_result = component.execute(
        bundle, request(component, "route", "[1]", '{"action":"a","spawn":[{"id":"x","uses":"echo"}]}')
    )
    assert node_result == component.wit.NodeResult(output="[1]", action="a", dynamic_nodes=['{"id":"x","uses":"echo"}'])
    silent = component.execute(bundle, request(component, "silent"))
    assert silent == component.wit.NodeResult(output=None, action=None, dynamic_nodes=[])
    assert memory.values["touched"] == "true"


def test_execute_passes_the_request_through(component: ModuleType, bundle: Bundle, memory: _MemoryHost) -> None:
    node_result = component.execute(bundle, request(component, "describe-call", '"in"', '{"k":1}'))
    assert node_result.output == (
        '{"input":"in","params":{"k":1},"run":{"uses":"describe-call","run_id":"run-1",'
        '"node_id":"n1","blueprint_id":"bp","attempt":2}}'
    )


@pytest.mark.parametrize(
    ("params", "variant", "message"),
    [
        ('{"kind":"retryable","message":"later"}', "NodeError_Retryable", "later"),
        ('{"kind":"fatal","message":"never"}', "NodeError_Fatal", "never"),
        ('{"kind":"invalid","message":"bad"}', "NodeError_InvalidInput", "bad"),
    ],
)
def test_errors_are_raised_as_err_of_the_variant(
    component: ModuleType, bundle: Bundle, memory: _MemoryHost, params: str, variant: str, message: str
) -> None:
    from componentize_py_types import Err

    with pytest.raises(Err) as raised:
        component.execute(bundle, request(component, "raise", params=params))
    assert raised.value.value == getattr(component.wit, variant)(message)


def test_an_unknown_node_type_is_invalid_input(component: ModuleType, bundle: Bundle) -> None:
    from componentize_py_types import Err

    with pytest.raises(Err) as raised:
        component.execute(bundle, request(component, "nope"))
    assert isinstance(raised.value.value, component.wit.NodeError_InvalidInput)
    assert "no node type `nope`" in raised.value.value.value


def test_the_context_uses_the_host_imports(component: ModuleType, memory: _MemoryHost) -> None:
    from flowcraft_node import Context, ContextWriteError, RunInfo

    ctx = Context(component.ComponentHost(), RunInfo("u", "r", "n", "b", 1))
    ctx.set("seen", ctx.get("seen") + 1)
    assert (memory.values["seen"], ctx.has("seen"), ctx.keys()) == ("5", True, ["seen"])
    assert (ctx.now_ms(), ctx.config("greeting"), ctx.config("nope")) == (99, "Hi", None)
    ctx.log("warn", "careful", n=1)
    assert (memory.logs[0].level, memory.logs[0].fields) == (Level.WARN, {"n": 1})
    assert ctx.delete("seen") is True
    with pytest.raises(ContextWriteError, match=r"context key `_outputs.x`: the host refused the write: context-set"):
        ctx.set("_outputs.x", 1)
