"""Which column names look secret (shadow.redact.looks_secret): every usual spelling of a password,
key, token or credential, and not the innocent names that merely hold a short secret word's letters."""

from __future__ import annotations

import pytest

from shadow.redact import looks_secret


@pytest.mark.parametrize("name", [
    "password", "password_hash", "passwd", "pwd", "hashed_password", "secret", "client_secret", "api_key",
    "apiKey", "API Key", "api-key", "access_token", "refresh_token", "auth_token", "session_token", "private_key",
    "otp_secret", "totp_seed", "salt", "credentials", "PwdHash", "user_pwd", "AWS_SECRET_ACCESS_KEY",
])
def test_secret_names(name):
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["name", "email", "footprint", "basalt", "saltwater_ok", "passage", "keyboard",
                                  "stopped", "race_name", "horse_id", "description"])
def test_innocent_names(name):
    assert not looks_secret(name)


def test_secret_members_of_json_documents_are_fingerprinted():
    from shadow.redact import fingerprint, redact_json

    text = '{"auth": {"token": "t0k", "user": "ann"}, "items": [{"apiKey": "k"}, 3]}'
    assert redact_json(text) == (
        '{"auth":{"token":"' + fingerprint("t0k") + '","user":"ann"},"items":[{"apiKey":"' + fingerprint("k") + '"},3]}'
    )
    assert redact_json({"password": None, "n": [1]}) == {"password": None, "n": [1]}
    untouched = '{"going": "good",  "wind": "N"}'
    assert redact_json(untouched) is untouched  # respelled only when a member was hidden
    for other in ("not json {", "{broken", 5, None, b"{}"):
        assert redact_json(other) == other
