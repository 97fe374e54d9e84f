"""Bytes to a JSON-like document: size and depth limits, charsets, JSON or XML, CloudEvents unwrapping."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat
from xml.parsers.expat import ExpatError

import orjson
import xmltodict

from consumer.core.errors import Rejection

__all__ = ["Decoded", "declares_dtd", "decode", "parse_document"]

_CHARSET = re.compile(r"(?i)charset\s*=\s*\"?([\w.:-]+)")
_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([\w.:-]+)[\"']")
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A parsed body, the CloudEvents attributes it was wrapped in (if any) and its source format."""

    document: Any
    syntax: str  # "json" or "xml"
    cloudevent: Mapping[str, str] | None = None


def decode(
    body: bytes,
    *,
    content_type: str | None,
    headers: Mapping[str, object],
    max_bytes: int,
    max_depth: int,
) -> Decoded:
    """Parse a message body, unwrapping a CloudEvents envelope in structured or AMQP binary mode."""
    if len(body) > max_bytes:
        raise Rejection("too-large", f"body of {len(body)} bytes exceeds the limit of {max_bytes}")
    binary_ce = _binary_cloudevent(headers)
    if binary_ce is not None:
        ce_type = binary_ce.get("datacontenttype") or content_type
        document, syntax = parse_document(body, ce_type, max_depth=max_depth)
        return Decoded(document, syntax, binary_ce)
    document, syntax = parse_document(body, content_type, max_depth=max_depth)
    if isinstance(document, dict) and "specversion" in document:
        return _structured_cloudevent(document, max_depth=max_depth)
    return Decoded(document, syntax)


def parse_document(body: bytes, content_type: str | None, *, max_depth: int) -> tuple[Any, str]:
    """Parse JSON or XML, chosen by the body's first character (content types are often wrong)."""
    text = _to_text(body, content_type)
    head = text.lstrip()[:1]
    if head in ("{", "["):
        document: Any = _parse_json(text)
        syntax = "json"
    elif head == "<":
        document = _parse_xml(body, text, max_depth)
        syntax = "xml"
    elif not head:
        raise Rejection("malformed", "empty body")
    else:
        raise Rejection("malformed", "body is neither JSON nor XML")
    # A body with fewer brackets or tags than the limit cannot nest deeper: skip the walk.
    if body.count(b"{") + body.count(b"[") + body.count(b"<") > max_depth:
        _check_depth(document, max_depth)
    return document, syntax


def declares_dtd(body: bytes) -> bool:
    """Whether an XML body declares a DTD or an entity: never sent by vendors, the vector of XXE."""
    return _DTD.search(body) is not None


def _to_text(body: bytes, content_type: str | None) -> str:
    charset = None
    if content_type and (m := _CHARSET.search(content_type)):
        charset = m.group(1)
    elif declared := _XML_DECL_ENCODING.match(body):
        charset = declared.group(1).decode("ascii")
    charset = (charset or "utf-8").lower()
    if charset in ("gbk", "gb2312"):
        charset = "gb18030"  # the superset: what vendors label GBK is often GB18030
    try:
        return body.decode("utf-8-sig" if charset in ("utf-8", "utf8") else charset)
    except LookupError:
        raise Rejection("undecodable", f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise Rejection("undecodable", f"body is not valid {charset} (byte {exc.start})") from None


def _parse_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Rejection("malformed", f"invalid JSON: {str(exc)[:120]}") from None


def _parse_xml(body: bytes, text: str, max_depth: int) -> Any:
    if declares_dtd(body):
        raise Rejection("unsafe-xml", "XML with a DTD or entity declaration is not accepted")
    # The declaration would make expat re-decode text we already decoded.
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    try:
        if len(text) > _PRESCAN_ABOVE:
            _xml_depth_prescan(text, max_depth)
        return xmltodict.parse(text, disable_entities=True)
    except ExpatError as exc:
        raise Rejection("malformed", f"invalid XML: {exc}") from None
    except ValueError as exc:  # xmltodict's refusal of entities
        raise Rejection("unsafe-xml", f"XML refused: {exc}") from None


# A tree costs ~100 bytes per element; below this size even the deepest one stays a few MB.
_PRESCAN_ABOVE = 32_768


def _xml_depth_prescan(text: str, max_depth: int) -> None:
    """Refuse deep nesting before xmltodict builds the tree, so memory stays bounded."""
    depth = 0

    def start(*_: object) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise Rejection("too-deep", f"document nests deeper than {max_depth} levels")

    def end(*_: object) -> None:
        nonlocal depth
        depth -= 1

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(text, True)


def _check_depth(document: Any, max_depth: int) -> None:
    # Iterative so that hostile nesting cannot exhaust the interpreter's stack.
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise Rejection("too-deep", f"document nests deeper than {max_depth} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


def _binary_cloudevent(headers: Mapping[str, object]) -> dict[str, str] | None:
    attrs = {}
    for key, value in headers.items():
        for prefix in ("cloudEvents:", "cloudEvents_", "cloudevents:", "cloudevents_"):
            if key.startswith(prefix):
                raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                attrs[key[len(prefix) :]] = raw
    return attrs if "specversion" in attrs else None


def _structured_cloudevent(envelope: dict[str, Any], *, max_depth: int) -> Decoded:
    attrs = {k: str(v) for k, v in envelope.items() if k not in ("data", "data_base64") and v is not None}
    if "data_base64" in envelope:
        try:
            raw = base64.b64decode(str(envelope["data_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise Rejection("malformed", "CloudEvent data_base64 is not valid base64") from None
        document, syntax = parse_document(raw, attrs.get("datacontenttype"), max_depth=max_depth)
        return Decoded(document, syntax, attrs)
    if "data" not in envelope:
        raise Rejection("malformed", "CloudEvent without data or data_base64")
    data = envelope["data"]
    if isinstance(data, str):
        # EventBridge targets sometimes carry the event data as a serialized string.
        document, syntax = parse_document(data.encode("utf-8"), "charset=utf-8", max_depth=max_depth)
        return Decoded(document, syntax, attrs)
    return Decoded(data, "json", attrs)
