"""v2 JSON data read two ways give the same arrays, or the same refusal.

simdjson reads a request's ``data`` arrays without a Python object per number when they are
flat lists of numbers (``blindai.server._json.Numbers``); every other document (one holding a
``NaN`` token, big integers, over 32 MiB) goes through Python lists and ``np.asarray``. Each
generated body is parsed as it is, then with a ``NaN`` token in an extra key (the codec
ignores the key; the token sends the whole document through the standard library's parser),
and both outcomes compared: arrays bit for bit, or the 400's message.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blindai.errors import InvalidInput
from blindai.server import _json
from blindai.server.protocols.v2.codec import parse_request

DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
FLOATING = ("FP16", "FP32", "FP64")
PAD = _json._FEW_NUMBERS + 1
"""A flat run of this many numbers before the generated ones: the arrays of a request holding
it are checked for nesting by counting ``[`` in the text, not by converting them to Python."""


def outcome(body: bytes) -> list[tuple[str, str, tuple[int, ...], object]] | str:
    """The parsed inputs (name, dtype, shape, bytes; strings for BYTES), or the 400's message."""
    try:
        parsed = parse_request(body, None)
    except InvalidInput as exc:
        return str(exc)
    return [
        (name, a.dtype.str, a.shape, a.tolist() if a.dtype.kind == "O" else a.tobytes())
        for name, a in parsed.inputs
    ]


def by_lists(body: bytes) -> bytes:
    """``body`` with a NaN token in a key the codec ignores: read without simdjson."""
    assert body.startswith(b"{")
    return b'{"nan_forces_the_list_path":NaN,' + body[1:]


def assert_same(body: bytes) -> None:
    got, want = outcome(body), outcome(by_lists(body))
    assert got == want, body[:300]


# -- number tokens as JSON writes them: signs, fractions, exponents, -0 ---------------------

digits = st.text("0123456789", min_size=1, max_size=12).map(lambda d: d.lstrip("0") or "0")


@st.composite
def number_token(draw: st.DrawFn, floating: bool) -> str:
    """A JSON number; for a floating type an integer stays within 2**53 (see below)."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(digits)
    fraction = draw(st.one_of(st.just(""), digits.map(lambda d: "." + d)))
    exponent = draw(
        st.one_of(
            st.just(""),
            st.tuples(st.sampled_from(["e", "E"]), st.sampled_from(["", "+", "-"]), digits).map(
                lambda t: t[0] + t[1] + t[2][:3]
            ),
        )
    )
    token = sign + whole + fraction + exponent
    if floating and not fraction and not exponent and abs(int(token)) > 2**53:
        # an all-integer list read by simdjson goes int64 -> float64 -> the floating type,
        # through numpy int64 -> the type: both round, differently past 2**53 (as before)
        return sign + whole + ".0"
    return token


ODD = [
    "0", "-0", "-0.0", "0.0", "1", "255", "256", "-1", "-129", "65504", "70000", "1e39",
    "-1e39", "1e-46", "5e-324", "2.5e-5", "1.7976931348623157e308", "9223372036854775807",
    "-9223372036854775808", "4294967295", "true", "false", "null", '"1"', '"a[b"', "{}",
]  # fmt: skip
"""Elements at the types' limits, and elements that are no number."""


def element(floating: bool) -> st.SearchStrategy[str]:
    return st.one_of(
        number_token(floating),
        st.sampled_from(ODD),
    )


@st.composite
def data_text(draw: st.DrawFn, datatype: str) -> tuple[str, int]:
    """A ``data`` array's text (flat, nested, ragged or holding odd elements), and how many
    elements it holds at its deepest level."""
    if datatype == "BYTES":
        items = draw(st.lists(st.text(max_size=4).map(json.dumps), max_size=8))
    else:
        items = draw(st.lists(element(datatype in FLOATING), max_size=8))
    shape_kind = draw(st.sampled_from(["flat", "rows", "ragged", "singletons", "mixed", "empty"]))
    if shape_kind == "rows" and items and len(items) % 2 == 0:
        half = len(items) // 2
        text = f"[[{','.join(items[:half])}],[{','.join(items[half:])}]]"
    elif shape_kind == "ragged" and items:
        text = f"[[{','.join(items[:-1])}],[{items[-1]}],[]]"
    elif shape_kind == "singletons":
        text = "[" + ",".join(f"[{i}]" for i in items) + "]"
    elif shape_kind == "mixed" and len(items) >= 2:
        text = f"[{items[0]},[{','.join(items[1:])}]]"
    elif shape_kind == "empty":
        text, items = "[]", []
    else:
        text = f"[{','.join(items)}]"
    return text, len(items)


@st.composite
def request_body(draw: st.DrawFn) -> bytes:
    inputs = []
    for i in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from(DATATYPES))
        text, count = draw(data_text(datatype))
        if draw(st.booleans()) and datatype != "BYTES" and text.startswith("[") and text != "[]":
            pad = "1.5" if datatype in FLOATING else "1"
            text = "[" + ",".join([pad] * PAD) + "," + text[1:]
            count += PAD
        shape = draw(st.sampled_from([[count], [1, count], [count + 1], []]))
        name = draw(st.sampled_from([f"x{i}", f"x[{i}]"]))
        inputs.append(
            f'{{"name":{json.dumps(name)},"datatype":"{datatype}",'
            f'"shape":{json.dumps(shape)},"data":{text}}}'
        )
    return ('{"inputs":[' + ",".join(inputs) + "]}").encode()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request_body())
@example(b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1.0,[2.0]]}]}')
@example(b'{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[[1,2],[]]}]}')
@example(
    b'{"inputs":[{"name":"x","datatype":"UINT64","shape":[2],"data":[1,18446744073709551615]}]}'
)
@example(b'{"inputs":[{"name":"x","datatype":"INT8","shape":[2],"data":[-0,127]}]}')
@example(b'{"inputs":[{"name":"x","datatype":"INT64","shape":[2],"data":[true,1]}]}')
def test_simdjson_and_list_paths_agree(body: bytes) -> None:
    assert_same(body)


# -- the fast paths are taken, and nesting is caught both ways ------------------------------


def _numbers(body: bytes) -> _json.Numbers:
    data = _json.loads_request(body)["inputs"][0]["data"]
    assert isinstance(data, _json.Numbers)
    return data


@pytest.mark.parametrize("size", [16, 4 * PAD], ids=["few", "many"])
@pytest.mark.parametrize("name", ["UINT8", "INT8", "UINT64", "INT32", "INT64"])
def test_flat_integer_data_is_read_without_python_objects(name: str, size: int) -> None:
    rng = np.random.default_rng(size)
    info = np.iinfo(np.dtype(name.lower()))
    values = rng.integers(max(info.min, -(2**63)), min(info.max, 2**63 - 1), size, endpoint=True)
    doc = {"inputs": [{"name": "x", "datatype": name, "shape": [size], "data": values.tolist()}]}
    body = json.dumps(doc).encode()
    assert _numbers(body).integers() is not None
    assert outcome(body) == outcome(by_lists(body))
    np.testing.assert_array_equal(parse_request(body, None).inputs[0][1], values)


@pytest.mark.parametrize("pad", [0, PAD], ids=["few", "many"])
@pytest.mark.parametrize(
    "data", ["[1.0,[2.0]]", "[[1.0,2.0],[]]", "[[],[1.0],[2.0]]", "[[1.0],2.0]"]
)
@pytest.mark.parametrize("name", ["FP32", "INT32"])
def test_ragged_data_is_refused_as_by_the_list_path(name: str, data: str, pad: int) -> None:
    """as_buffer flattens nested lists: a ragged list with as many numbers as elements (one
    nested list holding two, another none) was once read as flat for a floating type."""
    text = "[" + "1," * pad + data[1:]
    body = f'{{"inputs":[{{"name":"x","datatype":"{name}","shape":[{pad + 2}],"data":{text}}}]}}'
    assert not _numbers(body.encode()).flat
    with pytest.raises(InvalidInput, match="not a regular nested list"):
        parse_request(body.encode(), None)


def test_a_data_key_given_twice_is_not_taken_for_flat() -> None:
    """simdjson gives the first value of a key given twice; the count of ``[`` sees both."""
    first = "[" + "1," * PAD + "[2],3]"
    body = (
        f'{{"inputs":[{{"name":"x","datatype":"FP32","shape":[{PAD + 2}],'
        f'"data":{first},"data":5}}]}}'
    ).encode()
    assert not _numbers(body).flat
    with pytest.raises(InvalidInput, match="not a regular nested list"):
        parse_request(body, None)


@pytest.mark.parametrize("name", ["x[0]", "x"])
def test_a_bracket_in_a_string_only_costs_the_fast_path(name: str) -> None:
    size = 2 * PAD
    doc = {"inputs": [{"name": name, "datatype": "FP32", "shape": [size], "data": [0.5] * size}]}
    body = json.dumps(doc).encode()
    assert _numbers(body).flat == ("[" not in name)
    assert outcome(body) == outcome(by_lists(body))


def test_a_long_request_outside_its_data_reads_its_data_as_lists() -> None:
    """Past _MOST_NODES values outside the data, the arrays are not walked for the count."""
    doc: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [PAD], "data": [0.5] * PAD}],
        "parameters": {"junk": [0] * (_json._MOST_NODES + 1)},
    }
    body = json.dumps(doc).encode()
    assert not _numbers(body).flat
    assert outcome(body) == outcome(by_lists(body))
