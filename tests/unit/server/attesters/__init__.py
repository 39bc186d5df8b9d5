"""Tests of the server-side attesters (evidence collection)."""
