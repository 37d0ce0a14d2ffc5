"""SentinelSink.check: one token and one health record prove endpoint, DCR id, stream and role."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trustme
from tests.fakes.azure_identity import FakeManagedIdentity
from tests.fakes.azure_ingestion import FakeLogsIngestion, new_dcr_id
from tests.unit.sentinel.support import MakeSink

from opsentinel.errors import AuthError, ConfigError, UserError


def failure_line(make_sink: MakeSink, expected: type[UserError], **overrides: object) -> str:
    with pytest.raises(expected) as caught:
        make_sink(**overrides).check()
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_check_sends_one_health_record_and_says_what_it_proved(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    line = make_sink().check()
    assert fake_ingestion.endpoint in line
    assert fake_ingestion.dcr_id in line
    assert "Custom-OnePasswordEventLogs_CL" in line
    assert "\n" not in line
    (record,) = fake_ingestion.records
    assert record["log_source"] == "healthevents"
    assert record["category"] == "healthy"
    assert record["type"] == "check"
    assert record["details"] == {"message": "op-sentinel check"}
    assert record["uuid"]
    assert record["timestamp"].endswith("Z")


def test_no_credential_names_the_sources_tried(
    make_sink: MakeSink,
    fake_managed_identity: FakeManagedIdentity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_managed_identity.fail = True
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "prod")  # environment, workload identity, managed identity
    text = failure_line(make_sink, AuthError)
    assert text.startswith("could not get an Azure token (tried EnvironmentCredential, ")
    assert "ManagedIdentityCredential" in text
    assert "WorkloadIdentityCredential" in text
    assert "AZURE_CLIENT_SECRET" in text
    assert "managed identity" in text
    assert "az login" in text


def test_an_invalid_credential_setting_is_a_config_error(
    make_sink: MakeSink, fake_managed_identity: FakeManagedIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "nonsense")
    with pytest.raises(ConfigError, match="AZURE_TOKEN_CREDENTIALS"):
        make_sink()


def test_401_points_at_tenant_and_endpoint(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, fake_managed_identity: FakeManagedIdentity
) -> None:
    sink = make_sink()
    sink.check()
    fake_managed_identity.revoke_all()
    with pytest.raises(AuthError) as caught:
        sink.check()
    text = str(caught.value)
    assert "401" in text
    assert "AZURE_TENANT_ID" in text
    assert fake_ingestion.endpoint in text


def test_403_points_at_the_role(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    fake_ingestion.deny_role()
    text = failure_line(make_sink, AuthError)
    assert "'Monitoring Metrics Publisher' role on the DCR " + fake_ingestion.dcr_id in text


def test_404_points_at_the_dcr_id_and_stream(make_sink: MakeSink, fake_ingestion: FakeLogsIngestion) -> None:
    wrong = new_dcr_id()
    text = failure_line(make_sink, ConfigError, dcr_id=wrong)
    assert text.startswith(f"no DCR {wrong} / stream Custom-OnePasswordEventLogs_CL at ")
    assert "--dcr-id" in text
    assert "--stream" in text


def test_an_unreachable_endpoint_points_at_the_url(make_sink: MakeSink) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = failure_line(make_sink, ConfigError, endpoint=f"https://127.0.0.1:{port}")
    assert text.startswith(f"cannot reach the Logs Ingestion endpoint https://127.0.0.1:{port} (")
    assert "connection refused" in text
    assert "--dce" in text


def test_an_unknown_host_points_at_the_url(make_sink: MakeSink) -> None:
    text = failure_line(make_sink, ConfigError, endpoint="https://no-such-dce.invalid")
    assert text.startswith("cannot reach the Logs Ingestion endpoint https://no-such-dce.invalid (")


def test_an_untrusted_certificate_points_at_tls(make_sink: MakeSink, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    text = failure_line(make_sink, ConfigError, connection_verify=str(other_ca))
    assert text.startswith("TLS verification failed for the Logs Ingestion endpoint")
    assert "certificate" in text


def test_a_dcr_that_refuses_our_records_points_at_the_template(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion
) -> None:
    fake_ingestion.reject_when(lambda r: r.get("log_source") == "healthevents", code="InvalidPayload")
    text = failure_line(make_sink, ConfigError)
    assert "400 InvalidPayload" in text
    assert "op-sentinel azure template" in text


def test_a_failing_service_is_reported_after_the_retries(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, sleeps: list[float]
) -> None:
    fake_ingestion.fail_next(503, times=4)
    text = failure_line(make_sink, ConfigError)
    assert "kept failing" in text
    assert "503" in text
    assert len(sleeps) == 3


def test_the_ca_bundle_can_come_from_requests_ca_bundle(
    make_sink: MakeSink, fake_ingestion: FakeLogsIngestion, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How a connector started as a subprocess trusts the fake: no connection_verify, only the variable.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_ingestion.ca_path)
    assert "accepted a health record" in make_sink(connection_verify=None).check()
