"""hrp_data.cutover.idempotency without a database: which keys are accepted, their ids, the fingerprint."""

from __future__ import annotations

import pytest

from hrp_data.cutover.idempotency import MAX_KEY_LENGTH, BadKey, check_key, fingerprint, key_id

REQUEST = {"method": "POST", "path": "/api/races", "scope": "user:1", "body": b'{"race_name": "Derby"}'}


@pytest.mark.parametrize("raw", ["a", "order-42", "x" * MAX_KEY_LENGTH, " padded ", "~!@#"])
def test_printable_ascii_keys_are_taken_as_sent(raw):
    assert check_key(raw) == raw


@pytest.mark.parametrize("raw", ["", "   ", "x" * (MAX_KEY_LENGTH + 1), "tab\there", "caf\u00e9", "nul\x00"])
def test_other_keys_are_refused_in_one_line(raw):
    with pytest.raises(BadKey) as refused:
        check_key(raw)
    assert "\n" not in str(refused.value) and str(MAX_KEY_LENGTH) in str(refused.value)


def test_key_ids_are_stable_63_bit_and_scoped():
    assert key_id("user:1", "k") == key_id("user:1", "k")
    assert key_id("user:1", "k") != key_id("user:2", "k")
    assert key_id("user:1", "k") != key_id("user:1", "k2")
    assert -(2**63) <= key_id("user:1", "k") < 2**63


def test_the_fingerprint_changes_with_every_part_and_the_secret():
    base = fingerprint(b"secret", **REQUEST)
    assert base == fingerprint(b"secret", **REQUEST)
    assert fingerprint(b"other", **REQUEST) != base
    for part, changed in (("method", "PUT"), ("path", "/api/horses"), ("scope", "user:2"), ("body", b"{}")):
        assert fingerprint(b"secret", **{**REQUEST, part: changed}) != base, part


def test_parts_cannot_be_shifted_from_one_into_the_next():
    """Each part is length-prefixed: moving characters between method, path and scope changes the print."""
    one = fingerprint(b"s", method="POST", path="/a", scope="b", body=b"")
    two = fingerprint(b"s", method="POST/", path="a", scope="b", body=b"")
    assert one != two
