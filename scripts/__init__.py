"""Developer scripts (``make demo``, ``make bench``), and the server-process helper they share
with the tests (``scripts._serverproc``; a script run directly imports it as ``_serverproc``)."""
