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
