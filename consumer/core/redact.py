"""Strip credentials and URL signatures from text bound for logs, headers and error messages."""

from __future__ import annotations

import re

__all__ = ["redact"]

# Query parameters that sign or authorise a URL (OSS, COS, ICE callbacks, generic).
_SECRET_PARAMS = re.compile(
    r"(?i)(^|[?&;\s\"'])((?:amp;)?(?:Signature|OSSAccessKeyId|AccessKeyId|q-signature|q-ak|X-ICE-SIGNATURE|"
    r"x-oss-signature|x-oss-credential|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|"
    r"security-token|sign|token|access_token|password|passwd|secret))=[^&\s\"'<>]*"
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_HEADER_SECRETS = re.compile(r"(?i)\b(X-ICE-SIGNATURE|Authorization|X-Auth-Token)(\s*[:=]\s*)[^\s,;\"']+")


def redact(text: str) -> str:
    """Return text with signatures, credentials and passwords in URLs replaced by ***."""
    text = _URL_USERINFO.sub(r"\1***:***@", text)
    text = _SECRET_PARAMS.sub(r"\1\2=***", text)
    return _HEADER_SECRETS.sub(r"\1\2***", text)
