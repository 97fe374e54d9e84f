"""MongoDB over TLS: the URL options the README documents work against a TLS-only server."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from pymongo.errors import ServerSelectionTimeoutError

from consumer.settings import ConsumerSettings, LimitsSettings, MongoSettings, Settings, load_settings
from consumer.store.mongo import MongoStore
from schemas.job import JobStatus
from tests.conftest import make_update
from tests.integration.faults import PrivateMongo


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
            "-days", "2", "-subj", "/CN=speechjobs-test-ca")  # fmt: skip
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


@pytest.fixture
async def tls_mongo(tmp_path: Path) -> AsyncIterator[tuple[PrivateMongo, Path]]:
    ca, cert, key = make_certificates(tmp_path)
    server = PrivateMongo("--tls-cert-file", str(cert), "--tls-key-file", str(key))
    await server.start()
    yield server, ca
    await server.stop()


def settings_for(url: str) -> Settings:
    return load_settings(mongodb_url=SecretStr(url), mongodb_database="tls_test", mongodb_timeout_ms=1500)


async def test_store_works_over_tls_with_the_documented_options(tls_mongo: tuple[PrivateMongo, Path]) -> None:
    server, ca = tls_mongo
    store = MongoStore.from_settings(*_sections(settings_for(f"{server.url}&tls=true&tlsCAFile={ca}")))
    try:
        await store.setup()
        await store.ping()
        (outcome,) = await store.apply([(make_update(JobStatus.COMPLETED), datetime.now(UTC), "owner")])
        assert outcome.kind == "new"
        assert await store.jobs.count_documents({}) == 1
    finally:
        await store.close()


async def test_an_untrusted_server_certificate_is_refused(tls_mongo: tuple[PrivateMongo, Path]) -> None:
    server, _ = tls_mongo
    store = MongoStore.from_settings(*_sections(settings_for(f"{server.url}&tls=true")))
    try:
        with pytest.raises(ServerSelectionTimeoutError):
            await store.ping()
    finally:
        await store.close()


def _sections(settings: Settings) -> tuple[MongoSettings, ConsumerSettings, LimitsSettings]:
    return settings.mongodb, settings.consumer, settings.limits
