"""The request signers reproduce each vendor's published worked example, value by value, and keep secrets out.

Sources of the vectors: Alibaba Cloud "Request syntax and signature method V3"
(help.aliyun.com/document_detail/2593177.html), ECS "签名机制" for RPC V2
(help.aliyun.com/document_detail/25492.html), Tencent COS "请求签名"
(cloud.tencent.com/document/product/436/7778) and Huawei Cloud "API签名指南", "AK/SK签名认证算法详解"
(support.huaweicloud.com/intl/en-us/devg-apisign/api-sign-algorithm-003.html and the pages beside it).
The SDK cross-checks at the end run only where the vendor's SDK is importable (it is not a dependency).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.vendors import _signing as signing
from consumer.vendors.aliyun import signer as aliyun
from consumer.vendors.huawei_metastudio import signer as huawei
from consumer.vendors.tencent_ci import signer as cos

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# --- Alibaba Cloud V3 (ACS3-HMAC-SHA256): the documented RunInstances request -----------------------------

ACS3_AK = "YourAccessKeyId"
ACS3_SECRET = "YourAccessKeySecret"
ACS3_HOST = "ecs.cn-shanghai.aliyuncs.com"
ACS3_QUERY = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
ACS3_HEADERS = {
    "host": ACS3_HOST,
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": EMPTY_SHA256,
}
ACS3_CANONICAL_REQUEST = (
    "POST\n"
    "/\n"
    "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
    "host:ecs.cn-shanghai.aliyuncs.com\n"
    "x-acs-action:RunInstances\n"
    f"x-acs-content-sha256:{EMPTY_SHA256}\n"
    "x-acs-date:2023-10-26T10:22:32Z\n"
    "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n"
    "x-acs-version:2014-05-26\n"
    "\n"
    "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n"
    f"{EMPTY_SHA256}"
)
ACS3_HASHED = "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
ACS3_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
ACS3_SIGNED_HEADERS = "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
ACS3_AUTHORIZATION = (
    f"ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders={ACS3_SIGNED_HEADERS},"
    f"Signature={ACS3_SIGNATURE}"
)


def _acs3(headers: dict[str, str] = ACS3_HEADERS, **changes: Any) -> aliyun.Acs3Signature:
    arguments: dict[str, Any] = {
        "access_key_id": ACS3_AK,
        "access_key_secret": ACS3_SECRET,
        "method": "POST",
        "path": "/",
        "query": ACS3_QUERY,
        "headers": headers,
        "body": b"",
    }
    return aliyun.acs3_sign(**{**arguments, **changes})


def test_acs3_reproduces_the_published_example() -> None:
    signed = _acs3()
    assert signed.canonical_request == ACS3_CANONICAL_REQUEST
    assert signed.hashed_canonical_request == ACS3_HASHED
    assert signed.string_to_sign == f"ACS3-HMAC-SHA256\n{ACS3_HASHED}"
    assert signed.signed_headers == ACS3_SIGNED_HEADERS
    assert signed.signature == ACS3_SIGNATURE
    assert signed.authorization == ACS3_AUTHORIZATION


def test_acs3_headers_build_the_published_request() -> None:
    headers = aliyun.acs3_headers(
        access_key_id=ACS3_AK,
        access_key_secret=ACS3_SECRET,
        host=ACS3_HOST,
        action="RunInstances",
        version="2014-05-26",
        date="2023-10-26T10:22:32Z",
        nonce="3156853299f313e23d1673dc12e1703d",
        query=ACS3_QUERY,
    )
    assert headers == {**ACS3_HEADERS, "Authorization": ACS3_AUTHORIZATION}


def test_acs3_normalises_header_names_and_trims_values() -> None:
    messy = {f"  {name.upper()} ": f" {value}\t" for name, value in ACS3_HEADERS.items()}
    assert _acs3(messy).authorization == ACS3_AUTHORIZATION


def test_acs3_signs_only_host_content_type_and_acs_headers() -> None:
    extra = {**ACS3_HEADERS, "User-Agent": "speechjobs", "Accept": "application/json", "Authorization": "x"}
    assert _acs3(extra).authorization == ACS3_AUTHORIZATION
    typed = _acs3({**ACS3_HEADERS, "Content-Type": "application/json"})
    assert typed.signed_headers == f"content-type;{ACS3_SIGNED_HEADERS}"
    assert "content-type:application/json\nhost:" in typed.canonical_request


def test_acs3_signs_the_body_and_refuses_a_wrong_body_hash() -> None:
    body = b'{"TaskKey":"k"}'
    digest = hashlib.sha256(body).hexdigest()
    signed = _acs3({**ACS3_HEADERS, "x-acs-content-sha256": digest}, body=body)
    assert signed.canonical_request.endswith(f"\n{digest}")
    with pytest.raises(ValueError, match="SHA-256"):
        _acs3(body=body)


def test_acs3_sts_token_is_a_signed_header() -> None:
    headers = aliyun.acs3_headers(
        access_key_id=ACS3_AK,
        access_key_secret=ACS3_SECRET,
        host="tingwu.cn-beijing.aliyuncs.com",
        action="GetTaskInfo",
        version="2023-09-30",
        date="2024-01-01T00:00:00Z",
        nonce="n",
        method="GET",
        path="/openapi/tingwu/v2/tasks/abc",
        security_token="sts-token",
    )
    assert headers["x-acs-security-token"] == "sts-token"
    assert ";x-acs-security-token;x-acs-signature-nonce;" in headers["Authorization"]


def test_acs3_encodes_the_path_but_keeps_its_slashes() -> None:
    signed = _acs3(path="/openapi/a b/~x*/é")
    assert signed.canonical_request.split("\n")[1] == "/openapi/a%20b/~x%2A/%C3%A9"
    assert _acs3(path="").canonical_request.split("\n")[1] == "/"


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        # The SDK's own check value (alibabacloud_openapi_util tests: test_get_canonical_query_string).
        ({"test": " ~/*-+"}, "test=%20~%2F%2A-%2B"),
        ({"b": "a b", "a": "x"}, "a=x&b=a%20b"),
        ({"k": "通义听悟"}, "k=%E9%80%9A%E4%B9%89%E5%90%AC%E6%82%9F"),
        ({"empty": "", "a": "1"}, "a=1&empty="),
        ({"a b*": "v"}, "a%20b%2A=v"),
        ([("k", "2"), ("k", "1")], "k=1&k=2"),
        ({}, ""),
        (None, ""),
    ],
)
def test_acs3_canonical_query(query: aliyun.Query | None, canonical: str) -> None:
    assert aliyun.acs3_canonical_query(query) == canonical


@pytest.mark.parametrize(
    "headers",
    [
        {"x-acs-action": "A", "X-ACS-ACTION": "B"},
        {"host": "a\r\nx-acs-action:evil"},
        {" ": "empty name"},
    ],
)
def test_acs3_refuses_ambiguous_headers(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="header"):
        aliyun.acs3_canonical_headers(headers)


# --- Alibaba Cloud RPC V2 (HMAC-SHA1): ECS's documented DescribeRegions request ---------------------------

RPC_PARAMS = {
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
}
RPC_CANONICAL = (
    "AccessKeyId=testid&Action=DescribeRegions&Format=XML&SignatureMethod=HMAC-SHA1"
    "&SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0"
    "&Timestamp=2016-02-23T12%3A46%3A24Z&Version=2014-05-26"
)
RPC_STRING_TO_SIGN = (
    "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1"
    "%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0"
    "%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
)
RPC_SIGNATURE = "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_rpc_reproduces_the_published_example() -> None:
    signed = aliyun.rpc_sign(access_key_secret="testsecret", method="GET", params=RPC_PARAMS)
    assert signed.canonicalized_query == RPC_CANONICAL
    assert signed.string_to_sign == RPC_STRING_TO_SIGN
    assert signed.signature == RPC_SIGNATURE


def test_rpc_signed_params_build_the_published_request() -> None:
    params = aliyun.rpc_signed_params(
        access_key_id="testid",
        access_key_secret="testsecret",
        action="DescribeRegions",
        version="2014-05-26",
        timestamp="2016-02-23T12:46:24Z",
        nonce="3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        response_format="XML",
    )
    assert params == {**RPC_PARAMS, "Signature": RPC_SIGNATURE}


def test_rpc_matches_the_sdk_check_value() -> None:
    # alibabacloud_openapi_util's own test: get_rpcsignature(params, 'GET', 'secret').
    params = {"query": "test", "body": "test"}
    signed = aliyun.rpc_sign(access_key_secret="secret", method="GET", params=params)
    assert signed.signature == "XlUyV4sXjOuX5FnjUz9IF9tm5rU="


def test_rpc_order_of_parameters_does_not_matter() -> None:
    shuffled = dict(reversed(list(RPC_PARAMS.items())))
    assert (
        aliyun.rpc_sign(access_key_secret="testsecret", method="get", params=shuffled).signature
        == RPC_SIGNATURE
    )


def test_rpc_refuses_signature_and_clashing_common_parameters() -> None:
    with pytest.raises(ValueError, match="Signature"):
        aliyun.rpc_sign(access_key_secret="s", method="GET", params={**RPC_PARAMS, "Signature": "x"})
    with pytest.raises(ValueError, match="common"):
        aliyun.rpc_signed_params(
            access_key_id="id",
            access_key_secret="s",
            action="A",
            version="v",
            timestamp="t",
            nonce="n",
            params={"Action": "Other"},
        )


def test_rpc_sts_token_is_a_signed_parameter() -> None:
    params = aliyun.rpc_signed_params(
        access_key_id="id",
        access_key_secret="s",
        action="QueryMediaInfoJobList",
        version="2020-11-09",
        timestamp="2024-01-01T00:00:00Z",
        nonce="n",
        params={"JobIds": "a,b"},
        security_token="sts token",
    )
    assert params["SecurityToken"] == "sts token"
    unsigned = {k: v for k, v in params.items() if k != "Signature"}
    assert (
        aliyun.rpc_sign(access_key_secret="s", method="GET", params=unsigned).signature == params["Signature"]
    )


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        (" ", "%20"),
        ("*", "%2A"),
        ("~", "~"),
        ("+", "%2B"),
        ("/", "%2F"),
        ("=&", "%3D%26"),
        ("-_.", "-_."),
        ("AZaz09", "AZaz09"),
        ("é", "%C3%A9"),
        ("听悟", "%E5%90%AC%E6%82%9F"),
        ('"', "%22"),
    ],
)
def test_percent_encode_follows_rfc_3986(text: str, encoded: str) -> None:
    assert aliyun.percent_encode(text) == encoded
    assert cos.cos_encode(text) == encoded
    assert huawei.sdk_encode(text) == encoded


# --- Tencent Cloud COS (CI's API): the documented GET Object example ----------------------------------------

COS_ID = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
COS_KEY = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
COS_HOST = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"
COS_PATH = "/exampleobject(腾讯云)"
COS_QUERY = {"response-content-type": "application/octet-stream", "response-cache-control": "max-age=600"}
COS_HEADERS = {"Date": "Thu, 16 May 2019 06:55:53 GMT", "Host": COS_HOST}
COS_START, COS_END = 1557989753, 1557996953
COS_KEY_TIME = "1557989753;1557996953"
COS_HTTP_STRING = (
    "get\n"
    "/exampleobject(腾讯云)\n"
    "response-cache-control=max-age%3D600&response-content-type=application%2Foctet-stream\n"
    "date=Thu%2C%2016%20May%202019%2006%3A55%3A53%20GMT&host=examplebucket-1250000000.cos.ap-beijing.myqcloud.com\n"
)
COS_HASHED = "54ecfe22f59d3514fdc764b87a32d8133ea611e6"
COS_SIGNATURE = "01681b8c9d798a678e43b685a9f1bba0f6c0e012"
COS_AUTHORIZATION = (
    f"q-sign-algorithm=sha1&q-ak={COS_ID}&q-sign-time={COS_KEY_TIME}&q-key-time={COS_KEY_TIME}"
    "&q-header-list=date;host&q-url-param-list=response-cache-control;response-content-type"
    f"&q-signature={COS_SIGNATURE}"
)


def _cos(headers: dict[str, str] = COS_HEADERS, **changes: Any) -> cos.CosSignature:
    arguments: dict[str, Any] = {
        "secret_id": COS_ID,
        "secret_key": COS_KEY,
        "method": "GET",
        "path": COS_PATH,
        "query": COS_QUERY,
        "headers": headers,
        "start": COS_START,
        "end": COS_END,
    }
    return cos.cos_sign(**{**arguments, **changes})


def test_cos_reproduces_the_published_example() -> None:
    assert cos.cos_key_time(COS_START, COS_END) == COS_KEY_TIME
    assert cos.cos_sign_key(COS_KEY, COS_KEY_TIME) == "937914bf490e9e8c189836aad2052e4feeb35eaf"
    signed = _cos()
    assert signed.key_time == COS_KEY_TIME
    assert signed.url_param_list == "response-cache-control;response-content-type"
    assert signed.header_list == "date;host"
    assert signed.http_string == COS_HTTP_STRING
    assert signed.hashed_http_string == COS_HASHED
    assert signed.string_to_sign == f"sha1\n{COS_KEY_TIME}\n{COS_HASHED}\n"
    assert signed.signature == COS_SIGNATURE
    assert signed.authorization == COS_AUTHORIZATION


def test_cos_normalises_header_and_parameter_names() -> None:
    messy_headers = {" DATE ": "  Thu, 16 May 2019 06:55:53 GMT ", "host\t": COS_HOST}
    messy_query = {
        "Response-Content-Type": "application/octet-stream",
        "RESPONSE-CACHE-CONTROL": "max-age=600",
    }
    assert _cos(messy_headers, query=messy_query).authorization == COS_AUTHORIZATION


def test_cos_encodes_names_values_and_empty_values() -> None:
    signed = _cos(
        {"Host": COS_HOST, "x-cos-meta-名": "a b*~"},
        method="PUT",
        path="/",
        query=[("acl", ""), ("prefix", "音频/ 1")],
    )
    assert signed.url_param_list == "acl;prefix"
    assert signed.header_list == f"host;x-cos-meta-{cos.cos_encode('名').lower()}"
    assert signed.http_string == (
        f"put\n/\nacl=&prefix=%E9%9F%B3%E9%A2%91%2F%201\nhost={COS_HOST}&x-cos-meta-%e5%90%8d=a%20b%2A~\n"
    )


def test_cos_refuses_a_bad_window_path_or_header() -> None:
    with pytest.raises(ValueError, match="window"):
        _cos(end=COS_START)
    with pytest.raises(ValueError, match="path"):
        _cos(path="exampleobject")
    with pytest.raises(ValueError, match="twice"):
        _cos({"Host": COS_HOST, "host": COS_HOST})
    with pytest.raises(ValueError, match="line break"):
        _cos({"Host": COS_HOST + "\nx: y"})


# --- Huawei Cloud SDK-HMAC-SHA256: the documented VPC list request ------------------------------------------

HW_AK = "QTWAOYTTINDUT2QVKYUC"
HW_SK = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
HW_HOST = "service.region.example.com"
HW_PATH = "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
HW_QUERY = {"limit": "2", "marker": "13551d6b-755d-4757-b956-536f674975c0"}
HW_DATE = "20191115T033655Z"
HW_HEADERS = {"Content-Type": "application/json", "Host": HW_HOST, "X-Sdk-Date": HW_DATE}
HW_CANONICAL_REQUEST = (
    "GET\n"
    "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/\n"
    "limit=2&marker=13551d6b-755d-4757-b956-536f674975c0\n"
    "content-type:application/json\n"
    "host:service.region.example.com\n"
    "x-sdk-date:20191115T033655Z\n"
    "\n"
    "content-type;host;x-sdk-date\n"
    f"{EMPTY_SHA256}"
)
HW_HASHED = "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
HW_SIGNATURE = "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
HW_AUTHORIZATION = (
    f"SDK-HMAC-SHA256 Access={HW_AK}, SignedHeaders=content-type;host;x-sdk-date, Signature={HW_SIGNATURE}"
)


def _hw(headers: dict[str, str] = HW_HEADERS, **changes: Any) -> huawei.SdkSignature:
    arguments: dict[str, Any] = {
        "access_key": HW_AK,
        "secret_key": HW_SK,
        "method": "GET",
        "path": HW_PATH,
        "query": HW_QUERY,
        "headers": headers,
    }
    return huawei.sdk_sign(**{**arguments, **changes})


def test_huawei_reproduces_the_published_example() -> None:
    signed = _hw()
    assert signed.canonical_request == HW_CANONICAL_REQUEST
    assert signed.hashed_canonical_request == HW_HASHED
    assert signed.string_to_sign == f"SDK-HMAC-SHA256\n{HW_DATE}\n{HW_HASHED}"
    assert signed.signed_headers == "content-type;host;x-sdk-date"
    assert signed.signature == HW_SIGNATURE
    assert signed.authorization == HW_AUTHORIZATION


def test_huawei_headers_build_the_published_request() -> None:
    headers = huawei.sdk_headers(
        access_key=HW_AK,
        secret_key=HW_SK,
        method="GET",
        host=HW_HOST,
        path=HW_PATH,
        date=HW_DATE,
        query=HW_QUERY,
        headers={"Content-Type": "application/json"},
    )
    assert headers == {**HW_HEADERS, "Authorization": HW_AUTHORIZATION}


def test_huawei_normalises_header_names_and_trims_values() -> None:
    messy = {" content-TYPE": " application/json ", "HOST ": HW_HOST, "x-sdk-date": f"\t{HW_DATE}"}
    assert _hw(messy).authorization == HW_AUTHORIZATION


def test_huawei_security_token_and_unsigned_payload() -> None:
    headers = huawei.sdk_headers(
        access_key=HW_AK,
        secret_key=HW_SK,
        method="POST",
        host=HW_HOST,
        path="/v1/p/digital-assets",
        date=HW_DATE,
        headers={"X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD"},
        body=b"{}",
        security_token="temp-token",
    )
    assert "SignedHeaders=host;x-sdk-content-sha256;x-sdk-date;x-security-token," in headers["Authorization"]
    unsigned = _hw({**HW_HEADERS, "X-Sdk-Content-Sha256": "UNSIGNED-PAYLOAD"}, body=b"ignored")
    assert unsigned.canonical_request.endswith("\nUNSIGNED-PAYLOAD")


def test_huawei_refuses_a_request_without_its_date() -> None:
    with pytest.raises(ValueError, match="X-Sdk-Date"):
        _hw({"Host": HW_HOST})


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        (HW_PATH, f"{HW_PATH}/"),
        (f"{HW_PATH}/", f"{HW_PATH}/"),
        ("/", "/"),
        ("", "/"),
        ("/v1/a b/~x*/名", "/v1/a%20b/~x%2A/%E5%90%8D/"),
    ],
)
def test_huawei_canonical_uri_ends_with_a_slash(path: str, uri: str) -> None:
    assert huawei.canonical_uri(path) == uri


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ([("b", "2"), ("a", "z"), ("a", "y")], "a=y&a=z&b=2"),
        ({"name": "a b", "x": "~*", "u": "数字人"}, "name=a%20b&u=%E6%95%B0%E5%AD%97%E4%BA%BA&x=~%2A"),
        ({"empty": ""}, "empty="),
        (None, ""),
    ],
)
def test_huawei_canonical_query(query: huawei.Query | None, canonical: str) -> None:
    assert huawei.canonical_query(query) == canonical


# --- Across the signers -----------------------------------------------------------------------------------


def _texts(value: object) -> list[str]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [repr(value), *(str(getattr(value, f.name)) for f in dataclasses.fields(value))]
    if isinstance(value, dict):
        return [repr(value), *map(str, value), *map(str, value.values())]
    return [repr(value)]


def test_no_secret_appears_in_anything_returned() -> None:
    secret = "s3cr3t-SECRET-s3cr3t"
    returned: list[object] = [
        _acs3(access_key_secret=secret),
        aliyun.acs3_headers(
            access_key_id="id",
            access_key_secret=secret,
            host="h",
            action="a",
            version="v",
            date="d",
            nonce="n",
        ),
        aliyun.rpc_sign(access_key_secret=secret, method="GET", params=RPC_PARAMS),
        aliyun.rpc_signed_params(
            access_key_id="id", access_key_secret=secret, action="a", version="v", timestamp="t", nonce="n"
        ),
        _hw(secret_key=secret),
        huawei.sdk_headers(
            access_key="ak", secret_key=secret, method="GET", host="h", path="/", date=HW_DATE
        ),
    ]
    signed_cos = _cos(secret_key=secret)
    returned.append(signed_cos)
    # COS's SignKey opens every request within its window: it is as secret as the key.
    sign_key = cos.cos_sign_key(secret, COS_KEY_TIME)
    for value in returned:
        for text in _texts(value):
            assert secret not in text
            assert secret.lower() not in text.lower()
            assert sign_key not in text


SIGNERS = [aliyun, cos, huawei, signing]
PURE = {
    "__future__",
    "base64",
    "collections.abc",
    "consumer.vendors._signing",
    "dataclasses",
    "hashlib",
    "hmac",
    "typing",
    "urllib.parse",
}


@pytest.mark.parametrize("module", SIGNERS, ids=lambda m: m.__name__)
def test_signers_are_pure(module: Any) -> None:
    # No clock, no randomness, no I/O: the caller passes time and nonce, and sends the request itself.
    tree = ast.parse(Path(module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= PURE, imported - PURE


# --- Cross-checks against the vendors' own SDKs, where installed (test-only, not dependencies) --------------


def test_acs3_agrees_with_alibabacloud_openapi_util() -> None:
    util = pytest.importorskip("alibabacloud_openapi_util.client")
    tea_request = pytest.importorskip("Tea.request")
    # Names stay ASCII: this SDK leaves names unencoded, where the V3 document encodes them (as we do).
    query = {"TaskKey": "a b*~/值", "Type": "offline"}
    headers = {**ACS3_HEADERS, "content-type": "application/json", "x-acs-action": "CreateTask"}
    body = b'{"Input":{"SourceLanguage":"cn"}}'
    headers["x-acs-content-sha256"] = hashlib.sha256(body).hexdigest()
    request = tea_request.TeaRequest()
    request.method, request.pathname = "PUT", "/openapi/tingwu/v2/tasks"
    request.query, request.headers = query, headers
    theirs = util.Client.get_authorization(
        request, "ACS3-HMAC-SHA256", headers["x-acs-content-sha256"], ACS3_AK, ACS3_SECRET
    )
    ours = _acs3(headers, method="PUT", path="/openapi/tingwu/v2/tasks", query=query, body=body)
    assert ours.authorization == theirs


def test_rpc_agrees_with_alibabacloud_openapi_util() -> None:
    util = pytest.importorskip("alibabacloud_openapi_util.client")
    params = {**RPC_PARAMS, "Title": "a b*~/+", "名": "值"}
    theirs = util.Client.get_rpcsignature(dict(params), "POST", "testsecret")
    assert aliyun.rpc_sign(access_key_secret="testsecret", method="POST", params=params).signature == theirs


def test_cos_agrees_with_cos_python_sdk_v5(monkeypatch: pytest.MonkeyPatch) -> None:
    cos_auth = pytest.importorskip("qcloud_cos.cos_auth")
    cos_client = pytest.importorskip("qcloud_cos.cos_client")
    # The SDK signs from now - 60 to now + expire: pin its clock to the published window.
    monkeypatch.setattr(cos_auth, "time", SimpleNamespace(time=lambda: COS_START + 60))
    config = cos_client.CosConfig(Region="ap-beijing", SecretId=COS_ID, SecretKey=COS_KEY)
    # The SDK signs only some headers (not Date): compare on ones it signs.
    headers = {"Host": COS_HOST, "Content-Type": "application/xml", "x-cos-meta-a": "b c"}
    request = SimpleNamespace(method="GET", url=f"https://{COS_HOST}/x", headers=dict(headers))
    auth = cos_auth.CosS3Auth(config, key=COS_PATH, params=dict(COS_QUERY), expire=COS_END - COS_START - 60)
    theirs = auth(request).headers["Authorization"]
    assert _cos(headers).authorization == theirs


def test_huawei_agrees_with_huaweicloudsdkcore() -> None:
    signer = pytest.importorskip("huaweicloudsdkcore.signer.signer")
    sdk_request = pytest.importorskip("huaweicloudsdkcore.sdk_request")
    query = [("limit", "2"), ("marker", "a b*~"), ("name", "数字人")]
    request = sdk_request.SdkRequest(
        method="GET",
        schema="https",
        host=HW_HOST,
        resource_path="/v1/p/digital-assets",
        query_params=list(query),
        header_params=dict(HW_HEADERS),
        body=b"",
    )
    theirs = signer.Signer(SimpleNamespace(ak=HW_AK, sk=HW_SK)).sign(request).header_params["Authorization"]
    assert _hw(path="/v1/p/digital-assets", query=query).authorization == theirs
