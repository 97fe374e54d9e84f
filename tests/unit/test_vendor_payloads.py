"""Each vendor's Payload type and updates(): the same job updates as normalize, for every fixture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from consumer.core.adapter import Context
from consumer.core.decode import decode
from consumer.core.errors import Rejection
from consumer.vendors import REGISTRY
from consumer.vendors.aliyun_ice import parse as aliyun_ice
from consumer.vendors.huawei_metastudio import parse as huawei_metastudio
from consumer.vendors.tencent_ci import parse as tencent_ci
from consumer.vendors.tingwu import parse as tingwu
from schemas.aliyun_ice import IceEvent, IceJobList, IceSmartJob
from schemas.huawei_metastudio import MetaStudioError, MetaStudioTtsCallback, MetaStudioTtsJob
from schemas.job import Origin

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# The vendor module, and how its documents are unwrapped before they validate (as the bench's FastStream
# peer does in its decoders).
VENDORS: dict[str, tuple[ModuleType, Callable[[Any], Any]]] = {
    "tingwu": (tingwu, lambda d: d),
    "tencent-ci": (tencent_ci, tencent_ci.content),
    "aliyun-ice": (aliyun_ice, aliyun_ice.from_xml),
    "huawei-metastudio": (huawei_metastudio, lambda d: d),
}
CTX = Context(
    origin=Origin(channel="callback", body_sha256="0" * 64),
    max_depth=64,
    max_members=10_000,
    task_id_hint="hinted-job",
)


def documents() -> list[tuple[str, str, Any]]:
    """(fixture, provider, decoded document) for every fixture a vendor's detect() claims."""
    found: list[tuple[str, str, Any]] = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix not in (".json", ".xml"):
            continue
        try:
            body = path.read_bytes()
            document = decode(
                body, content_type=None, headers={}, max_bytes=1 << 22, max_depth=64, max_members=10_000
            ).document
        except Rejection:
            continue
        for provider, adapter in REGISTRY.items():
            try:
                claimed = adapter.detect(document)
            except (TypeError, ValueError, AttributeError):
                claimed = False
            if claimed:
                found.append((str(path.relative_to(FIXTURES)), provider, document))
                break
    return found


DOCUMENTS = documents()


def outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except Rejection as exc:
        return ("rejected", exc.reason)
    except (ValidationError, ValueError, TypeError):
        return ("invalid",)


def test_every_vendor_has_fixtures() -> None:
    assert {provider for _, provider, _ in DOCUMENTS} == set(VENDORS)
    assert len(DOCUMENTS) > 40


@pytest.mark.parametrize(("name", "provider", "document"), DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_the_payload_type_and_updates_give_what_normalize_gives(
    name: str, provider: str, document: Any
) -> None:
    module, unwrap = VENDORS[provider]
    expected = outcome(lambda: REGISTRY[provider].normalize(document, CTX))  # type: ignore[index]
    got = outcome(lambda: module.updates(TypeAdapter(module.Payload).validate_python(unwrap(document)), CTX))
    if isinstance(expected, tuple) and expected[1:] == ("invalid-payload",):
        # normalize names its own validation failures; through the type they are validation errors.
        assert got in (expected, ("invalid",)), (name, got)
    else:
        assert got == expected, name


@pytest.mark.parametrize(
    ("document", "model"),
    [
        ({"EventType": "ProduceMediaComplete", "MessageBody": {"JobId": "j"}}, IceEvent),
        ({"SmartJobList": [{"JobId": "j", "JobState": "Finished"}]}, IceJobList),
        ({"JobId": "j", "State": "Finished"}, IceSmartJob),
    ],
)
def test_the_ice_payload_is_told_apart_by_its_keys(document: dict[str, Any], model: type) -> None:
    assert type(TypeAdapter(aliyun_ice.Payload).validate_python(document)) is model


@pytest.mark.parametrize(
    ("document", "model"),
    [
        ({"status": "FINISHED", "job_id": "j"}, MetaStudioTtsCallback),
        ({"state": "SUCCEED"}, MetaStudioTtsJob),
        ({"error_code": "MSS.00000001", "error_msg": "no"}, MetaStudioError),
    ],
)
def test_the_metastudio_payload_is_told_apart_by_its_keys(document: dict[str, Any], model: type) -> None:
    assert type(TypeAdapter(huawei_metastudio.Payload).validate_python(document)) is model


def test_a_metastudio_body_of_no_known_shape_fails_validation() -> None:
    with pytest.raises(ValidationError, match=r"union_tag_not_found|Unable to extract tag"):
        TypeAdapter(huawei_metastudio.Payload).validate_python({"something": "else"})
