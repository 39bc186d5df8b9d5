"""--log-level: the server's own loggers follow it; other libraries never go below WARNING."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from blindai.errors import ConfigurationError
from blindai.server.main import set_log_level


@pytest.fixture
def levels() -> Iterator[None]:
    names = ("", "blindai", "PIL")
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("levels")
def test_debug_is_the_servers_alone():
    set_log_level("debug")
    assert logging.getLogger("blindai.server").isEnabledFor(logging.DEBUG)
    # Pillow's DEBUG lines quote a client's image EXIF tags
    assert not logging.getLogger("PIL.TiffImagePlugin").isEnabledFor(logging.INFO)
    assert logging.getLogger("PIL.TiffImagePlugin").isEnabledFor(logging.WARNING)


@pytest.mark.usefixtures("levels")
def test_a_quieter_level_applies_to_every_logger():
    set_log_level("error")
    assert not logging.getLogger("blindai.server").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("PIL").isEnabledFor(logging.WARNING)


def test_an_unknown_level_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown log level 'chatty'"):
        set_log_level("chatty")
