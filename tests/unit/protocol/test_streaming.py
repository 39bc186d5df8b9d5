"""protocol.streaming: CBOR heads and message prefixes decode as the whole message would."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindai.protocol.streaming import head, message_prefix


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
