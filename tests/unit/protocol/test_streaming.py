"""protocol.streaming: CBOR heads and message prefixes decode as the whole message would."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindai.protocol.streaming import _BIG, dumps, dumps_parts, head, message_prefix


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_heads_are_cbor2s_canonical_heads(n):
    assert head(0, n) == cbor2.dumps(n)
    assert head(1, n) == cbor2.dumps(-1 - n)
    if n < 1 << 20:
        assert head(2, n) == cbor2.dumps(b"\0" * n)[: len(head(2, n))]


def test_heads_refuse_what_cbor_cannot_say():
    for major, arg in ((8, 0), (-1, 0), (2, -1), (2, 2**64)):
        with pytest.raises(ValueError):
            head(major, arg)


@given(
    fields=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k != "model"),
        st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
        max_size=5,
    ),
    model=st.binary(max_size=300),
)
def test_prefix_plus_the_bytes_is_the_whole_message(fields, model):
    body = message_prefix(fields, "model", len(model)) + model
    assert body == cbor2.dumps({**fields, "model": model})
    assert cbor2.loads(body) == {**fields, "model": model}


def test_the_streamed_key_cannot_also_be_a_field():
    with pytest.raises(ValueError, match="both"):
        message_prefix({"model": 1}, "model", 0)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.builds(lambda n, b: bytes([b]) * n, st.integers(_BIG, _BIG + 3000), st.integers(0, 255)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_values)
def test_dumps_is_cbor2s_encoding_byte_for_byte(obj):
    assert dumps(obj) == cbor2.dumps(obj)


def test_dumps_takes_buffers_without_converting_them():
    import numpy as np

    x = np.arange(1000, dtype=np.float32).reshape(10, 100)
    assert dumps({"t": memoryview(x), "u": bytearray(b"ab")}) == cbor2.dumps(
        {"t": x.tobytes(), "u": b"ab"}
    )


def test_dumps_parts_leaves_large_byte_strings_as_views_of_their_buffers():
    import numpy as np

    x = np.zeros(20_000, np.float32)  # 80 KB: over _BIG
    parts = dumps_parts({"id": "m", "inputs": [{"bytes_data": memoryview(x), "n": b"ab"}]})
    big = [p for p in parts if isinstance(p, memoryview)]
    assert len(big) == 1 and np.shares_memory(np.frombuffer(big[0], np.uint8), x)
    assert len(parts) == 3  # the small items before and after are joined
    assert b"".join(parts) == cbor2.dumps(
        {"id": "m", "inputs": [{"bytes_data": x.tobytes(), "n": b"ab"}]}
    )
