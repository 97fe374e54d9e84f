"""Strip credentials and URL signatures from text, header tables and log fields bound for the outside."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MASK", "is_secret_header", "redact", "redact_value"]

MASK = "***"  # what a secret is replaced by

# The families of names under which vendors, gateways and SDKs put credentials, as header names and as
# query parameters alike: Authorization and cookies, API keys (x-api-key, x-goog-api-key, apikey), access
# key ids (OSSAccessKeyId, x-acs-accesskey-id), tokens (x-auth-token, x-oss-security-token, x-tc-token,
# X-Amz-Security-Token), signatures (X-Amz-Signature, q-signature, x-acs-signature-*, X-ICE-SIGNATURE,
# x-sdk-signature) and passwords. Short names (sign, sig, key, ak) count only as the whole name or its
# last part: as a substring they would blank `design`, `x-original-routing-key` and `q-sign-time`.
_SECRET_NAME = re.compile(
    r"(?i)signature|token|secret|passw(?:or)?d|passwd|credential|cookie|authori[sz]ation"
    r"|(?:api|auth|access|private|session|account|master)[-_.]?keys?"
    r"|(?:^|[-_.])(?:pwd|sign|sig|ak|sk)$|^(?:key|auth)$"
)
# Names whose value runs to the end of the line: `Authorization: Bearer <token>`, `Cookie: a=1; b=2`.
_WHOLE_LINE = re.compile(r"(?i)authori[sz]ation|cookie")

# `name=value` (query parameters, key=value logs) and `name: value` (header dumps, JSON, dict reprs). The
# name may not continue a longer word, so each run of name characters is tried once: linear time even
# on megabytes of text without a separator.
_ASSIGNMENT = re.compile(r"(?<![\w.-])([\w.-]+)[\"']?[ \t]*([:=])[ \t]*[\"']?")
_PARAM_VALUE_END = re.compile(r"[&\s\"'<>]")  # a query parameter's value ends at the next parameter
_HEADER_VALUE_END = re.compile(r"[\s,;\"']")
_LINE_END = re.compile(r"[\r\n\"']")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")

_MAX_DEPTH = 32  # deeper containers are not walked (and not shown): no recursion limit to hit


def is_secret_header(name: str) -> bool:
    """Whether a header (or query parameter, or log field) of this name carries a credential."""
    return _SECRET_NAME.search(name) is not None


def redact(text: str) -> str:
    """Return text with signatures, credentials and passwords in URLs, `name=value` and `name: value`
    pairs replaced by ***."""
    # Every pattern needs a separator: most log fields (ids, provider names, outcomes) have none.
    if "=" not in text and ":" not in text:
        return text
    text = _URL_USERINFO.sub(r"\1***:***@", text)
    return _redact_assignments(text)


def redact_value(value: object, _depth: int = 0) -> object:
    """A value with every string redacted and every entry under a secret name masked, through dicts,
    lists, tuples and sets at any depth; bytes become redacted text, anything else is returned as is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "backslashreplace"))
    if _depth >= _MAX_DEPTH and isinstance(value, Mapping | list | tuple | set | frozenset):
        return "[nested too deep]"
    if isinstance(value, Mapping):
        return {
            redact(str(key)): MASK if is_secret_header(str(key)) else redact_value(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(item, _depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def _redact_assignments(text: str) -> str:
    parts: list[str] = []
    position = 0
    while match := _ASSIGNMENT.search(text, position):
        name, separator = match.group(1), match.group(2)
        parts.append(text[position : match.end()])
        position = match.end()
        if not is_secret_header(name):
            continue  # the value may itself hold `?Signature=`: it is scanned like the rest
        if _WHOLE_LINE.search(name):
            end = _LINE_END.search(text, position)
        elif separator == "=":
            end = _PARAM_VALUE_END.search(text, position)
        else:
            end = _HEADER_VALUE_END.search(text, position)
        parts.append(MASK)
        position = end.start() if end else len(text)
    parts.append(text[position:])
    return "".join(parts)
