"""The redaction processor keeps secrets and DSN passwords out of every log line."""

import io
import json

import structlog

from hrp_data.logs import configure_logging, redact_secrets

SECRETS = ["scrypt:32768:8:1$salt$deadbeef", "AKIA-live-key-123", "s3cr3t-value", "hunter2"]


def test_processor_fingerprints_secret_fields_at_any_depth():
    event = redact_secrets(None, "info", {
        "event": "x",
        "password_hash": SECRETS[0],
        "row": {"api_key": SECRETS[1], "nested": [{"api_secret": SECRETS[2]}], "name": "Frankel"},
        "url": f"postgresql://hrp:{SECRETS[3]}@db:5432/hrp",
    })
    text = json.dumps(event)
    for secret in SECRETS:
        assert secret not in text
    assert event["row"]["name"] == "Frankel"
    assert event["password_hash"].startswith("sha256:")
    assert event["url"] == "postgresql://hrp:***@db:5432/hrp"


def test_equal_secrets_get_equal_fingerprints_and_different_ones_differ():
    a = redact_secrets(None, "info", {"api_key": "one"})["api_key"]
    b = redact_secrets(None, "info", {"api_key": "one"})["api_key"]
    c = redact_secrets(None, "info", {"api_key": "two"})["api_key"]
    assert a == b != c


def test_configured_json_logging_never_prints_a_secret():
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)
    log = structlog.get_logger()
    log.info("user.created", password_hash=SECRETS[0], dsn=f"postgresql://u:{SECRETS[3]}@h/db")
    log.warning("apply.failed", error=RuntimeError(f"connect to postgresql://u:{SECRETS[3]}@h/db failed"))
    line = stream.getvalue()
    for secret in SECRETS:
        assert secret not in line
    records = [json.loads(l) for l in line.splitlines()]
    assert records[0]["event"] == "user.created" and records[1]["level"] == "warning"


def test_a_pool_cleanup_error_is_one_line_without_a_traceback():
    """The pool's failed rollback of a connection the server closed says one line, no traceback."""
    import io
    import logging

    from hrp_data.logs import configure_logging

    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        raise ConnectionError("connection already closed\nINSERT INTO users VALUES ('SECRET')")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool.impl.QueuePool").error("Exception during reset or similar", exc_info=True)
    out = stream.getvalue()
    assert out.count("\n") == 1 and "Traceback" not in out and "SECRET" not in out
    assert "Exception during reset or similar: ConnectionError: connection already closed" in out


def test_lines_go_to_the_stderr_of_the_moment_never_to_one_closed_since(monkeypatch, capsys):
    """Configured while something had replaced sys.stderr (a test's capture, CliRunner) that has
    closed since: the next line goes to the sys.stderr of now, not to the closed stream."""
    import io
    import sys

    import structlog

    from hrp_data.logs import configure_logging

    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replaced)
    configure_logging("console", "INFO")
    structlog.get_logger("t").warning("first")
    monkeypatch.undo()
    replaced.close()
    structlog.get_logger("t").warning("second")  # raised ValueError: I/O operation on closed file
    assert "second" in capsys.readouterr().err
    configure_logging()
