"""Bytes to a JSON-like document: size, depth and member limits, charsets, JSON or XML, CloudEvents."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat
from xml.parsers.expat import ExpatError

import orjson
import xmltodict

from consumer.core.errors import Rejection, error_name

__all__ = [
    "Decoded",
    "check_shape",
    "declares_dtd",
    "decode",
    "may_exceed",
    "parse_document",
]

_CHARSET = re.compile(r"(?i)charset\s*=\s*\"?([\w.:-]+)")
_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([\w.:-]+)[\"']")
_DTD = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_DTD_BYTES = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
# A byte-order mark outranks any label (XML 1.0 appendix F, the WHATWG encoding standard). UTF-32's marks
# come first: UTF-16's are their prefixes.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_BOM_FIRST_BYTES = frozenset(bom[0] for bom, _ in _BOMS)
# Codecs Python counts as text encodings that are no charset: escape and IDNA transforms (punycode decodes in
# quadratic time). Codecs that are not text encodings at all (zlib, base64, rot13) fail in bytes.decode.
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"})


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
    max_members: int,
) -> Decoded:
    """Parse a message body, unwrapping a CloudEvents envelope in structured or AMQP binary mode."""
    if len(body) > max_bytes:
        raise Rejection("too-large", f"body of {len(body)} bytes exceeds the limit of {max_bytes}")
    binary_ce = _binary_cloudevent(headers)
    if binary_ce is not None:
        ce_type = binary_ce.get("datacontenttype") or content_type
        document, syntax = parse_document(body, ce_type, max_depth=max_depth, max_members=max_members)
        return Decoded(document, syntax, binary_ce)
    document, syntax = parse_document(body, content_type, max_depth=max_depth, max_members=max_members)
    if isinstance(document, dict) and "specversion" in document:
        return _structured_cloudevent(document, max_depth=max_depth, max_members=max_members)
    return Decoded(document, syntax)


def parse_document(
    body: bytes, content_type: str | None, *, max_depth: int, max_members: int | None = None
) -> tuple[Any, str]:
    """Parse JSON or XML, chosen by the body's first character (content types are often wrong).

    Without max_members the members are not counted (tools reading trusted files).
    """
    members = sys.maxsize if max_members is None else max_members
    text = _to_text(body, content_type)
    head = text[:1]
    if head.isspace():
        head = text.lstrip()[:1]
    if head in ("{", "["):
        document: Any = _parse_json(text)
        syntax = "json"
    elif head == "<":
        document = _parse_xml(text, max_depth, members)
        syntax = "xml"
    elif not head:
        raise Rejection("malformed", "empty body")
    else:
        raise Rejection("malformed", "body is neither JSON nor XML")
    if may_exceed(body, syntax=syntax, max_depth=max_depth, max_members=members):
        check_shape(document, max_depth=max_depth, max_members=members)
    return document, syntax


def may_exceed(serialized: bytes, *, syntax: str, max_depth: int, max_members: int) -> bool:
    """Whether a serialized document could nest deeper or hold more members than allowed; False is certain.

    Counted at C speed, so that most documents skip the walk. JSON: a level opens a bracket and a member or
    item is followed by a comma or is its container's last (brackets and commas in strings only raise the
    counts). XML: a level opens a tag, and an element or attribute takes two bytes at least (`<a/>`, ` a=""`).
    """
    if syntax == "xml":
        return len(serialized) > 2 * max_members or serialized.count(b"<") > max_depth
    opens = serialized.count(b"{") + serialized.count(b"[")
    return opens > max_depth or opens + serialized.count(b",") > max_members


def check_shape(document: Any, *, max_depth: int, max_members: int) -> None:
    """Refuse a document nested deeper than max_depth, or with more than max_members members and items."""
    if type(document) is not dict and type(document) is not list:
        return
    members = 0
    # Iterative, so that hostile nesting cannot exhaust the interpreter's stack; exact type tests, as
    # parsers give exact types (and they are what makes the walk cheap).
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise Rejection("too-deep", f"document nests deeper than {max_depth} levels")
        members += len(node)
        if members > max_members:
            raise Rejection("too-large", f"document holds more than {max_members} members and items")
        depth += 1
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth))


def declares_dtd(body: bytes) -> bool:
    """Whether an XML body declares a DTD or an entity in any charset we read, or cannot be decoded to tell:
    never sent by vendors, the vector of XXE."""
    # Without NULs, UTF-16 and UTF-32 spell ASCII as ASCII: found even when no mark or label names them.
    if _DTD_BYTES.search(body) or (b"\x00" in body and _DTD_BYTES.search(body.replace(b"\x00", b""))):
        return True
    try:
        text = _to_text(body, None)
    except Rejection:
        return True
    return _DTD.search(text) is not None


def _to_text(body: bytes, content_type: str | None) -> str:
    if body[:1] and body[0] in _BOM_FIRST_BYTES:
        for bom, marked in _BOMS:
            if body.startswith(bom):
                text = _decode(body[len(bom) :], marked)
                # A UTF-16/32 mark before neither JSON nor XML is binary that happens to start so.
                if marked != "utf-8" and text.lstrip()[:1] not in ("<", "{", "["):
                    raise Rejection("undecodable", f"a {marked} byte-order mark before neither JSON nor XML")
                return text
    charset = None
    if content_type and (m := _CHARSET.search(content_type)):
        charset = m.group(1)
    elif b"\x00" in body[:4]:
        charset = _unmarked_utf16_or_32(body)
    elif declared := _XML_DECL_ENCODING.match(body):
        charset = declared.group(1).decode("ascii")
    text = _decode(body, (charset or "utf-8").lower())
    # A mark spelled in a charset that has no byte-order mark of its own (GB18030 has one).
    return text[1:] if text[:1] == "\ufeff" else text


def _unmarked_utf16_or_32(body: bytes) -> str | None:
    """JSON and XML start with an ASCII character: where the NULs around it are names the encoding (XML 1.0
    appendix F, RFC 4627). Expat reads such bytes so too, whatever it is told: so must we."""
    head = body[:4]
    if head[:3] == b"\x00\x00\x00" and head[3:4] in _FIRST_ASCII:
        return "utf-32-be"
    if head[1:4] == b"\x00\x00\x00" and head[:1] in _FIRST_ASCII:
        return "utf-32-le"
    if head[:1] == b"\x00" and head[1:2] in _FIRST_ASCII:
        return "utf-16-be"
    if head[1:2] == b"\x00" and head[:1] in _FIRST_ASCII:
        return "utf-16-le"
    return None  # NULs around anything else are binary, not a document in another encoding


# What JSON or XML may start with: any other first character makes the body neither, in any encoding.
_FIRST_ASCII = frozenset(bytes([c]) for c in b"<{[ \t\r\n")


def _decode(body: bytes, charset: str) -> str:
    if charset in ("utf-8", "utf8"):  # nearly every body: no codec lookup, and UTF-8 cannot spell a surrogate
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejection("undecodable", f"body is not valid utf-8 (byte {exc.start})") from None
    label = charset[:40]
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        raise Rejection("undecodable", f"unknown charset {label!r}") from None
    if name in _NOT_CHARSETS:
        raise Rejection("undecodable", f"{label!r} is a text transform, not a charset")
    if name in ("gbk", "gb2312"):
        name = "gb18030"  # the superset: what vendors label GBK is often GB18030
    try:
        text = body.decode(name)
    except UnicodeDecodeError as exc:
        raise Rejection("undecodable", f"body is not valid {label} (byte {exc.start})") from None
    except (LookupError, UnicodeError, ValueError, TypeError) as exc:  # LookupError: not a text codec
        raise Rejection("undecodable", f"{label!r} is not a charset ({error_name(exc)})") from None
    # UTF-7 and the like can spell lone surrogates: no parser or database takes them, so it is not text.
    if (found := _SURROGATE.search(text)) is not None:
        raise Rejection("undecodable", f"body decodes to a lone surrogate (character {found.start()})")
    return text


def _parse_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Rejection("malformed", f"invalid JSON: {str(exc)[:120]}") from None


def _parse_xml(text: str, max_depth: int, max_members: int) -> Any:
    # Checked on the decoded text, which is exactly what expat is given: no charset can hide a DTD from it.
    if "<!" in text and _DTD.search(text):
        raise Rejection("unsafe-xml", "XML with a DTD or entity declaration is not accepted")
    # XML has no NUL, and expat would take NULs after '<' for UTF-16 and read other text than we checked.
    if "\x00" in text:
        raise Rejection("malformed", "XML text with a NUL character")
    # The declaration would make expat re-decode text we already decoded.
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    try:
        if len(text) > _PRESCAN_ABOVE:
            _xml_prescan(text, max_depth, max_members)
        return xmltodict.parse(text, disable_entities=True)
    except ExpatError as exc:
        raise Rejection("malformed", f"invalid XML: {exc}") from None
    except UnicodeError as exc:  # a ValueError too, but the text's fault, not an entity's
        raise Rejection("undecodable", f"XML text is not encodable: {error_name(exc)}") from None
    except ValueError as exc:  # xmltodict's refusal of entities
        raise Rejection("unsafe-xml", f"XML refused: {exc}") from None


# A tree costs ~100 bytes per element; below this size even the deepest one stays a few MB.
_PRESCAN_ABOVE = 32_768


def _xml_prescan(text: str, max_depth: int, max_members: int) -> None:
    """Refuse deep nesting and too many elements before xmltodict builds the tree, so memory stays bounded."""
    depth = 0
    elements = 0

    def start(*_: object) -> None:
        nonlocal depth, elements
        depth += 1
        elements += 1
        if depth > max_depth:
            raise Rejection("too-deep", f"document nests deeper than {max_depth} levels")
        if elements > max_members:
            raise Rejection("too-large", f"document holds more than {max_members} elements")

    def end(*_: object) -> None:
        nonlocal depth
        depth -= 1

    def doctype(*_: object) -> None:
        # _parse_xml already refused any DTD; this keeps the scan from expanding one should that ever change.
        raise Rejection("unsafe-xml", "XML with a DTD or entity declaration is not accepted")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = doctype
    parser.Parse(text, True)


def _binary_cloudevent(headers: Mapping[str, object]) -> dict[str, str] | None:
    attrs = {}
    for key, value in headers.items():
        for prefix in ("cloudEvents:", "cloudEvents_", "cloudevents:", "cloudevents_"):
            if key.startswith(prefix):
                raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                attrs[key[len(prefix) :]] = raw
    return attrs if "specversion" in attrs else None


def _structured_cloudevent(envelope: dict[str, Any], *, max_depth: int, max_members: int) -> Decoded:
    attrs = {k: str(v) for k, v in envelope.items() if k not in ("data", "data_base64") and v is not None}
    if "data_base64" in envelope:
        try:
            raw = base64.b64decode(str(envelope["data_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise Rejection("malformed", "CloudEvent data_base64 is not valid base64") from None
        document, syntax = parse_document(
            raw, attrs.get("datacontenttype"), max_depth=max_depth, max_members=max_members
        )
        return Decoded(document, syntax, attrs)
    if "data" not in envelope:
        raise Rejection("malformed", "CloudEvent without data or data_base64")
    data = envelope["data"]
    if isinstance(data, str):
        # EventBridge targets sometimes carry the event data as a serialized string.
        document, syntax = parse_document(
            data.encode("utf-8"), "charset=utf-8", max_depth=max_depth, max_members=max_members
        )
        return Decoded(document, syntax, attrs)
    return Decoded(data, "json", attrs)
