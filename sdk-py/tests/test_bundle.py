"""Declaring node types and bundles."""

from typing import Any

import pytest

from flowcraft_node import Bundle, Context, NodeType, node
from flowcraft_node.testing import TestHost


def plain(ctx: Context, value: Any, params: dict[str, Any]) -> Any:
    """Doubles its input.

    More text that is not the description.
    """
    return value * 2


def test_node_wraps_the_function_and_stays_callable() -> None:
    doubled = node("double", params_schema={"type": "object"})(plain)
    assert isinstance(doubled, NodeType)
    assert (doubled.uses, doubled.description, doubled.params_schema) == (
        "double",
        "Doubles its input.",
        {"type": "object"},
    )
    assert doubled(TestHost().context(), 4, {}) == 8


def test_an_explicit_description_wins_and_no_docstring_means_empty() -> None:
    assert node("a", description="Mine")(plain).description == "Mine"
    assert node("b")(lambda ctx, value, params: None).description == ""


@pytest.mark.parametrize("uses", ["", None, 3])
def test_uses_must_be_a_non_empty_string(uses: Any) -> None:
    with pytest.raises(ValueError, match="`uses` must be a non-empty string"):
        node(uses)


def test_a_params_schema_must_be_json() -> None:
    with pytest.raises(ValueError, match=r"^@node\('s'\): params_schema is not JSON"):
        node("s", params_schema={"type": {"object"}})


def test_uses_keys_are_unique_in_a_bundle() -> None:
    with pytest.raises(ValueError, match="two node types share the `uses` key `same`"):
        Bundle([node("same")(plain), node("same")(plain)])


def test_a_bundle_lists_only_node_types() -> None:
    with pytest.raises(TypeError, match=r"decorate the function with @node"):
        Bundle([plain])  # type: ignore[list-item]


def test_bundle_lookup_and_identity_defaults() -> None:
    first, second = node("first")(plain), node("second")(plain)
    bundle = Bundle(iter([first, second]))
    assert bundle.uses() == ["first", "second"]
    assert bundle.node("second") is second and bundle.node("third") is None
    assert bundle.label() == "this bundle"
    named = bundle.with_defaults("greeter", "1.0.0")
    assert (named.name, named.version, named.label()) == ("greeter", "1.0.0", "greeter 1.0.0")
    pinned = Bundle([first], name="own", version="2.0.0").with_defaults("greeter", "1.0.0")
    assert (pinned.name, pinned.version) == ("own", "2.0.0")
