"""Checks of the Docker Hub emulator, driven the way an upstream client is.

Each test starts its own emulator in front of the session's docker-registry
and follows the anonymous pull flow with http.client: challenge, token,
manifest, blob redirect, CDN. No gatecache is involved.
"""

import http.client
import json
import re
import socket
import time
from urllib.parse import urlencode, urlsplit

import pytest

from support.clients import Reply
from support.hub_emulator import (  # noqa: F401 (`hub_emulator` is a fixture)
    SERVICE,
    TOO_MANY_REQUESTS_BODY,
    hub_emulator,
)
from support.images import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST
from support.net import client_context

OTHER_CLIENT = "127.0.0.2"


def send(host, method, target, ca, headers=None, source=None):
    """Send one request to host ("127.0.0.1:port") and return the Reply.

    `source` binds the client socket to another loopback address, which
    the emulator counts as another client.
    """
    address, port = host.rsplit(":", 1)
    connection = http.client.HTTPSConnection(
        address, int(port), context=client_context(ca), timeout=60,
        source_address=(source, 0) if source else None,
    )
    try:
        connection.request(method, target, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return Reply(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=body,
            protocol="http/1.1",
        )
    finally:
        connection.close()


def challenge_params(reply):
    """Return the parameters of a Bearer WWW-Authenticate header."""
    value = reply.header("WWW-Authenticate")
    assert value is not None and value.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


def fetch_token(hub, ca, *scopes, service=SERVICE, headers=None):
    query = urlencode([("service", service)] + [("scope", s) for s in scopes])
    return send(hub.auth_host, "GET", f"/token?{query}", ca, headers=headers)


def token_for(hub, ca, *repositories):
    reply = fetch_token(hub, ca, *(f"repository:{r}:pull" for r in repositories))
    assert reply.status == 200, reply.body
    return json.loads(reply.body)["token"]


def bearer(token, **headers):
    return {"Authorization": f"Bearer {token}", **headers}


def get_manifest(hub, ca, image, token, method="GET", source=None):
    return send(
        hub.registry_host, method,
        f"/v2/{image.repository}/manifests/{image.tag}", ca,
        headers=bearer(token, Accept=f"{MEDIA_TYPE_INDEX}, {MEDIA_TYPE_MANIFEST}"),
        source=source,
    )


def location_target(location):
    parts = urlsplit(location)
    return parts.netloc, f"{parts.path}?{parts.query}"


@pytest.fixture(scope="module")
def image(multi_image):
    """The small amd64 and arm64 index, pushed to the docker-registry."""
    return multi_image


@pytest.fixture
def ca(test_ca):
    return test_ca.cert


def test_listeners_select_http1_by_alpn(hub_emulator, ca):
    hub = hub_emulator()
    context = client_context(ca, alpn=("h2", "http/1.1"))
    for host in (hub.registry_host, hub.auth_host, hub.cdn_host):
        address, port = host.rsplit(":", 1)
        with socket.create_connection((address, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=address) as tls:
                assert tls.selected_alpn_protocol() == "http/1.1"


def test_base_challenges_without_token(hub_emulator, ca):
    hub = hub_emulator()
    reply = send(hub.registry_host, "GET", "/v2/", ca)
    assert reply.status == 401
    assert reply.header("WWW-Authenticate") == (
        f'Bearer realm="https://{hub.auth_host}/token",service="{SERVICE}"')
    assert reply.error_codes() == ["UNAUTHORIZED"]


def test_base_accepts_token_without_scope(hub_emulator, ca):
    hub = hub_emulator()
    token = json.loads(fetch_token(hub, ca).body)["token"]
    reply = send(hub.registry_host, "GET", "/v2/", ca, headers=bearer(token))
    assert reply.status == 200


def test_manifest_flow_counts_get_only(hub_emulator, ca, image):
    hub = hub_emulator(limit=10, window_seconds=600)
    target = f"/v2/{image.repository}/manifests/{image.tag}"

    challenge = send(hub.registry_host, "GET", target, ca)
    params = challenge_params(challenge)
    assert challenge.status == 401
    assert params == {"realm": hub.realm, "service": SERVICE,
                      "scope": f"repository:{image.repository}:pull"}

    token_reply = fetch_token(hub, ca, params["scope"], service=params["service"])
    grant = json.loads(token_reply.body)
    assert token_reply.status == 200
    assert grant["token"] == grant["access_token"]
    assert grant["expires_in"] == 300
    assert grant["issued_at"].endswith("Z")

    got = get_manifest(hub, ca, image, grant["token"])
    digest = image.built.manifest_digest
    assert got.status == 200
    assert got.body == image.blob(digest)
    assert got.header("Content-Type") == MEDIA_TYPE_INDEX
    assert got.header("Docker-Content-Digest") == digest
    assert got.header("RateLimit-Limit") == "10;w=600"
    assert got.header("RateLimit-Remaining") == "9;w=600"
    assert got.header("Docker-RateLimit-Source") == "127.0.0.1"

    head = get_manifest(hub, ca, image, grant["token"], method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.header("Content-Length") == str(len(got.body))
    assert head.header("Docker-Content-Digest") == digest
    assert head.header("RateLimit-Remaining") == "9;w=600"

    stats = hub.stats()
    assert stats.manifest_gets == 1
    assert stats.manifest_gets_by_client == {"127.0.0.1": 1}
    assert stats.manifest_gets_by_reference == {(image.repository, image.tag): 1}
    assert stats.manifest_heads == 1
    assert stats.token_requests == 1
    assert stats.unauthorized == 1


def test_blob_redirects_to_cdn_without_token(hub_emulator, ca, image):
    hub = hub_emulator()
    token = token_for(hub, ca, image.repository)
    digest = image.platform_blobs("amd64")[-1]
    blob = image.blob(digest)

    redirect = send(hub.registry_host, "GET",
                    f"/v2/{image.repository}/blobs/{digest}", ca,
                    headers=bearer(token))
    cdn_host, cdn_target = location_target(redirect.header("Location"))
    assert redirect.status == 307
    assert cdn_host == hub.cdn_host
    assert "signature=" in cdn_target

    whole = send(cdn_host, "GET", cdn_target, ca)
    assert whole.status == 200
    assert whole.body == blob
    assert whole.header("Docker-Content-Digest") is None

    part = send(cdn_host, "GET", cdn_target, ca, headers={"Range": "bytes=10-99"})
    assert part.status == 206
    assert part.body == blob[10:100]
    assert part.header("Content-Range") == f"bytes 10-99/{len(blob)}"

    stats = hub.stats()
    assert stats.blob_redirects == 1
    assert stats.cdn_requests == 2
    assert stats.cdn_authorization_violations == 0
    assert stats.manifest_gets == 0
    assert [r.authorization for r in hub.requests("cdn")] == [False, False]


def test_blob_missing_in_repository_is_404(hub_emulator, ca, image):
    hub = hub_emulator()
    token = token_for(hub, ca, image.repository)
    digest = "sha256:" + "0" * 64
    reply = send(hub.registry_host, "GET",
                 f"/v2/{image.repository}/blobs/{digest}", ca,
                 headers=bearer(token))
    assert reply.status == 404
    assert reply.error_codes() == ["BLOB_UNKNOWN"]
    assert hub.stats().blob_redirects == 0


def test_cdn_rejects_authorization(hub_emulator, ca, image):
    hub = hub_emulator()
    token = token_for(hub, ca, image.repository)
    digest = image.platform_blobs("amd64")[0]
    redirect = send(hub.registry_host, "GET",
                    f"/v2/{image.repository}/blobs/{digest}", ca,
                    headers=bearer(token))
    cdn_host, cdn_target = location_target(redirect.header("Location"))

    reply = send(cdn_host, "GET", cdn_target, ca, headers=bearer(token))
    assert reply.status == 400
    assert reply.body == b"Authorization is not accepted on signed URLs\n"
    assert hub.stats().cdn_authorization_violations == 1
    assert hub.requests("cdn")[-1].authorization


def test_cdn_rejects_bad_signature(hub_emulator, ca, image):
    hub = hub_emulator()
    token = token_for(hub, ca, image.repository)
    digest = image.platform_blobs("amd64")[0]
    redirect = send(hub.registry_host, "GET",
                    f"/v2/{image.repository}/blobs/{digest}", ca,
                    headers=bearer(token))
    cdn_host, cdn_target = location_target(redirect.header("Location"))
    other_repository = cdn_target.replace(
        "repository=gatecache-test%2Fmulti", "repository=gatecache-test%2Fother")
    flipped = cdn_target[:-1] + ("0" if cdn_target[-1] != "0" else "1")

    assert other_repository != cdn_target
    assert send(cdn_host, "GET", other_repository, ca).status == 403
    assert send(cdn_host, "GET", flipped, ca).status == 403
    assert hub.stats().cdn_signature_rejections == 2


def test_cdn_rejects_expired_url(hub_emulator, ca, image):
    hub = hub_emulator(url_lifetime=1)
    token = token_for(hub, ca, image.repository)
    digest = image.platform_blobs("amd64")[0]
    redirect = send(hub.registry_host, "GET",
                    f"/v2/{image.repository}/blobs/{digest}", ca,
                    headers=bearer(token))
    cdn_host, cdn_target = location_target(redirect.header("Location"))
    # The URL carries its expiry in whole Unix seconds.
    time.sleep(2.1)
    reply = send(cdn_host, "GET", cdn_target, ca)
    assert reply.status == 403
    assert reply.body == b"invalid or expired signature\n"


def test_spent_budget_returns_429(hub_emulator, ca, image):
    hub = hub_emulator(limit=2, window_seconds=600)
    token = token_for(hub, ca, image.repository)
    remaining = [get_manifest(hub, ca, image, token).header("RateLimit-Remaining")
                 for _ in range(2)]
    refused = get_manifest(hub, ca, image, token)
    head = get_manifest(hub, ca, image, token, method="HEAD")

    assert remaining == ["1;w=600", "0;w=600"]
    assert refused.status == 429
    assert refused.body == TOO_MANY_REQUESTS_BODY
    assert refused.error_codes() == ["TOOMANYREQUESTS"]
    assert refused.header("RateLimit-Remaining") == "0;w=600"
    assert 1 <= int(refused.header("Retry-After")) <= 600
    assert head.status == 200
    assert head.header("RateLimit-Remaining") == "0;w=600"
    stats = hub.stats()
    assert stats.manifest_gets == 2
    assert stats.too_many_requests == 1
    assert stats.manifest_heads == 1


def test_429_body_matches_registry_text():
    document = json.loads(TOO_MANY_REQUESTS_BODY)
    assert document == {"errors": [{
        "code": "TOOMANYREQUESTS",
        "message": "You have reached your pull rate limit. You may increase "
                   "the limit by authenticating and upgrading: "
                   "https://www.docker.com/increase-rate-limit"}]}


def test_rolling_window_refills_one_pull_at_a_time(hub_emulator, ca, image):
    hub = hub_emulator(limit=2, window_seconds=3)
    token = token_for(hub, ca, image.repository)
    assert get_manifest(hub, ca, image, token).status == 200
    time.sleep(1.5)
    assert get_manifest(hub, ca, image, token).status == 200
    refused = get_manifest(hub, ca, image, token)
    assert refused.status == 429
    # About 1.5 s until the first pull leaves the window, rounded up.
    assert int(refused.header("Retry-After")) in (1, 2)

    # Only the first pull leaves the window here; the second stays in it
    # for about 1.5 s more.
    time.sleep(hub.quota().reset_seconds + 0.1)
    refilled = get_manifest(hub, ca, image, token)
    assert refilled.status == 200
    assert refilled.header("RateLimit-Remaining") == "0;w=3"
    assert get_manifest(hub, ca, image, token).status == 429


def test_fixed_window_refills_at_period_end(hub_emulator, ca, image):
    hub = hub_emulator(limit=1, window_seconds=2, window="fixed")
    token = token_for(hub, ca, image.repository)
    assert get_manifest(hub, ca, image, token).status == 200
    refused = get_manifest(hub, ca, image, token)
    assert refused.status == 429
    assert 1 <= int(refused.header("Retry-After")) <= 2

    time.sleep(hub.quota().reset_seconds + 0.1)
    refilled = get_manifest(hub, ca, image, token)
    assert refilled.status == 200
    assert refilled.header("RateLimit-Remaining") == "0;w=2"


def test_budget_is_per_client_address(hub_emulator, ca, image):
    hub = hub_emulator(limit=1)
    token = token_for(hub, ca, image.repository)
    assert get_manifest(hub, ca, image, token).status == 200
    assert get_manifest(hub, ca, image, token).status == 429
    other = get_manifest(hub, ca, image, token, source=OTHER_CLIENT)
    assert other.status == 200
    assert other.header("Docker-RateLimit-Source") == OTHER_CLIENT
    assert hub.stats().manifest_gets_by_client == {"127.0.0.1": 1,
                                                   OTHER_CLIENT: 1}


def test_budget_controls(hub_emulator, ca, image):
    hub = hub_emulator(limit=3)
    token = token_for(hub, ca, image.repository)

    hub.set_remaining(0)
    assert get_manifest(hub, ca, image, token).status == 429

    hub.reset_window()
    assert get_manifest(hub, ca, image, token).header(
        "RateLimit-Remaining") == "2;w=21600"

    hub.set_limit(5)
    head = get_manifest(hub, ca, image, token, method="HEAD")
    assert head.header("RateLimit-Limit") == "5;w=21600"
    assert head.header("RateLimit-Remaining") == "4;w=21600"

    with pytest.raises(ValueError, match="remaining=6"):
        hub.set_remaining(6)


def test_header_forms(hub_emulator, ca, image):
    hub = hub_emulator(limit=4, window_seconds=60, header_form="ietf")
    token = token_for(hub, ca, image.repository)
    ietf = get_manifest(hub, ca, image, token)
    assert ietf.header("RateLimit-Limit") is None
    assert ietf.header("RateLimit-Policy") == '"pulls";q=4;w=60'
    assert re.fullmatch(r'"pulls";r=3;t=(59|60)', ietf.header("RateLimit"))
    assert ietf.header("Docker-RateLimit-Source") == "127.0.0.1"

    hub.set_header_form("none")
    hidden = get_manifest(hub, ca, image, token)
    names = set(hidden.headers)
    assert hidden.status == 200
    assert not {"ratelimit-limit", "ratelimit-remaining", "ratelimit",
                "ratelimit-policy", "docker-ratelimit-source"} & names
    hub.set_remaining(0)
    assert get_manifest(hub, ca, image, token).status == 429


def test_expired_token_gets_challenge(hub_emulator, ca, image):
    hub = hub_emulator(token_lifetime=1)
    reply = fetch_token(hub, ca, f"repository:{image.repository}:pull")
    grant = json.loads(reply.body)
    assert grant["expires_in"] == 1
    assert get_manifest(hub, ca, image, grant["token"]).status == 200

    time.sleep(1.2)
    expired = get_manifest(hub, ca, image, grant["token"])
    assert expired.status == 401
    assert challenge_params(expired) == {
        "realm": hub.realm, "service": SERVICE,
        "scope": f"repository:{image.repository}:pull",
        "error": "invalid_token"}
    assert hub.stats().manifest_gets == 1


def test_expire_tokens_ends_every_token(hub_emulator, ca, image):
    hub = hub_emulator()
    token = token_for(hub, ca, image.repository)
    hub.expire_tokens()
    reply = send(hub.registry_host, "GET", "/v2/", ca, headers=bearer(token))
    assert reply.status == 401
    assert challenge_params(reply)["error"] == "invalid_token"


def test_unknown_token_is_invalid(hub_emulator, ca, image):
    hub = hub_emulator()
    reply = get_manifest(hub, ca, image, "not-a-token")
    assert reply.status == 401
    assert challenge_params(reply)["error"] == "invalid_token"


def test_scope_mismatch_gets_challenge(hub_emulator, ca, image):
    hub = hub_emulator()
    other = token_for(hub, ca, "library/busybox")
    reply = get_manifest(hub, ca, image, other)
    assert reply.status == 401
    assert challenge_params(reply) == {
        "realm": hub.realm, "service": SERVICE,
        "scope": f"repository:{image.repository}:pull",
        "error": "insufficient_scope"}

    push_only = json.loads(fetch_token(
        hub, ca, f"repository:{image.repository}:push").body)["token"]
    assert get_manifest(hub, ca, image, push_only).status == 401
    assert hub.stats().manifest_gets == 0


def test_token_covers_several_scopes(hub_emulator, ca, image):
    hub = hub_emulator()
    reply = fetch_token(hub, ca, "repository:library/busybox:pull",
                        f"repository:{image.repository}:pull,push")
    token = json.loads(reply.body)["token"]
    assert get_manifest(hub, ca, image, token).status == 200


def test_token_endpoint_rejects_bad_requests(hub_emulator, ca, image):
    hub = hub_emulator()
    scope = f"repository:{image.repository}:pull"
    wrong_service = fetch_token(hub, ca, scope, service="example.com")
    bad_scope = fetch_token(hub, ca, "repository:Not_Valid:pull")
    credentials = fetch_token(hub, ca, scope,
                              headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert wrong_service.status == 400
    assert "registry.docker.io" in json.loads(wrong_service.body)["details"]
    assert bad_scope.status == 400
    assert credentials.status == 401
    stats = hub.stats()
    assert stats.token_requests == 3
    assert stats.token_credentials_rejected == 1


def test_injected_5xx_then_recovers(hub_emulator, ca, image):
    hub = hub_emulator()
    token = token_for(hub, ca, image.repository)
    hub.inject_fault(image.repository, 503, count=1)
    failed = get_manifest(hub, ca, image, token)
    recovered = get_manifest(hub, ca, image, token)
    assert failed.status == 503
    assert failed.header("RateLimit-Remaining") is None
    assert recovered.status == 200
    stats = hub.stats()
    assert stats.faults == 1
    assert stats.manifest_gets == 1


def test_injected_timeout_closes_without_response(hub_emulator, ca, image):
    hub = hub_emulator(stall_seconds=1)
    token = token_for(hub, ca, image.repository)
    hub.inject_fault(image.repository, "timeout")
    started = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        get_manifest(hub, ca, image, token)
    assert time.monotonic() - started >= 1
    hub.clear_faults()
    assert get_manifest(hub, ca, image, token).status == 200


def test_manifest_delay_slows_get(hub_emulator, ca, image):
    hub = hub_emulator(manifest_delay=0.5)
    token = token_for(hub, ca, image.repository)
    started = time.monotonic()
    assert get_manifest(hub, ca, image, token).status == 200
    assert time.monotonic() - started >= 0.5


def test_throttled_download_outlives_token(hub_emulator, ca, image):
    hub = hub_emulator(token_lifetime=1)
    token = token_for(hub, ca, image.repository)
    digest = image.platform_blobs("amd64")[-1]
    blob = image.blob(digest)
    redirect = send(hub.registry_host, "GET",
                    f"/v2/{image.repository}/blobs/{digest}", ca,
                    headers=bearer(token))
    cdn_host, cdn_target = location_target(redirect.header("Location"))

    # About 2 s for the whole layer, twice the token's lifetime.
    rate = max(1024, len(blob) // 2)
    hub.set_cdn_rate(rate)
    started = time.monotonic()
    download = send(cdn_host, "GET", cdn_target, ca)
    elapsed = time.monotonic() - started

    assert download.status == 200
    assert download.body == blob
    assert elapsed >= 0.9 * len(blob) / rate
    assert get_manifest(hub, ca, image, token).status == 401
    assert hub.stats().cdn_bytes == len(blob)


def test_constructor_rejects_bad_options(hub_emulator):
    with pytest.raises(ValueError, match="header_form='json'"):
        hub_emulator(header_form="json")
    with pytest.raises(ValueError, match="window='sliding'"):
        hub_emulator(window="sliding")
    with pytest.raises(ValueError, match="token_lifetime=0"):
        hub_emulator(token_lifetime=0)
