"""POST /api/v1/auth/service/token through Django's test client: the RFC 6749 request and error rules."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings

from accounts.services.service_tokens import service_credential_create, service_credential_revoke
from accounts.tokens import token_verify
from audit.models import AuditLog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("roomy_token_rate_limits")]

URL = "/api/v1/auth/service/token"
FORM = "application/x-www-form-urlencoded"
_addresses = itertools.count(1)


def basic(client_id: str, secret: str, *, encode=lambda value: quote(value, safe="")) -> str:
    return "Basic " + base64.b64encode(f"{encode(client_id)}:{encode(secret)}".encode()).decode()


def post(client, fields=None, *, body=None, content_type=FORM, **extra):
    data = body if body is not None else urlencode(fields or {}, doseq=True)
    return client.post(URL, data=data, content_type=content_type, **extra)


def assert_oauth_error(response, status, error):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert all(ch not in body.get("error_description", "") for ch in '"\\')  # RFC 6749 5.2 character set
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Basic ")
    return body


def test_basic_auth_issues_a_bearer_token(client, credential):
    client_id, secret = credential
    response = post(client, {"grant_type": "client_credentials", "scope": "mc:register"},
                    HTTP_AUTHORIZATION=basic(client_id, secret))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS
    assert body["scope"] == "mc:register service.write.gc service.write.mh"
    claims = token_verify(body["access_token"], audience=settings.JWT_SERVICE_AUDIENCE)
    assert claims.subject == client_id
    assert claims.scopes == {"mc:register", "service.write.gc", "service.write.mh"}
    assert claims.service_type == "meeting-controller" and "aud" not in claims.claims


def test_form_fields_auth_without_scope_gets_every_allowed_scope(client, credential):
    client_id, secret = credential
    response = post(client, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert response.status_code == 200
    assert response.json()["scope"] == "mc:register mh:register"


def test_basic_credentials_are_form_urldecoded(client, credential):
    # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic; a client may encode every character.
    client_id, secret = credential
    every_char = basic(client_id, secret, encode=lambda value: "".join(f"%{byte:02X}" for byte in value.encode()))
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=every_char)
    assert response.status_code == 200


def test_a_matching_client_id_field_beside_basic_is_accepted(client, credential):
    client_id, secret = credential
    response = post(client, {"grant_type": "client_credentials", "client_id": client_id},
                    HTTP_AUTHORIZATION=basic(client_id, secret))
    assert response.status_code == 200


def test_an_empty_scope_counts_as_omitted(client, credential):
    client_id, secret = credential
    response = post(client, {"grant_type": "client_credentials", "scope": ""},
                    HTTP_AUTHORIZATION=basic(client_id, secret))
    assert response.json()["scope"] == "mc:register mh:register"


# --- invalid_request -----------------------------------------------------------------------------------


def test_missing_grant_type_is_invalid_request(client, credential):
    assert_oauth_error(post(client, {"scope": "mc:register"}, HTTP_AUTHORIZATION=basic(*credential)),
                       400, "invalid_request")


def test_empty_grant_type_is_invalid_request(client, credential):
    assert_oauth_error(post(client, {"grant_type": ""}, HTTP_AUTHORIZATION=basic(*credential)), 400, "invalid_request")


@pytest.mark.parametrize("name", ["grant_type", "scope", "client_id"])
def test_a_repeated_parameter_is_invalid_request(client, credential, name):
    client_id, secret = credential
    fields = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
              "scope": "mc:register"}
    fields[name] = [fields[name], fields[name]]
    body = assert_oauth_error(post(client, fields), 400, "invalid_request")
    assert name in body["error_description"]


def test_both_basic_and_client_secret_field_is_invalid_request(client, credential):
    client_id, secret = credential
    response = post(client, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
                    HTTP_AUTHORIZATION=basic(client_id, secret))
    assert_oauth_error(response, 400, "invalid_request")


def test_a_client_id_field_naming_another_client_beside_basic_is_invalid_request(client, credential):
    client_id, secret = credential
    response = post(client, {"grant_type": "client_credentials", "client_id": "svc_" + "0" * 24},
                    HTTP_AUTHORIZATION=basic(client_id, secret))
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml"])
def test_a_body_that_is_neither_form_encoded_nor_json_is_invalid_request(client, credential, content_type):
    response = post(client, body='{"grant_type": "client_credentials"}', content_type=content_type,
                    HTTP_AUTHORIZATION=basic(*credential))
    assert_oauth_error(response, 400, "invalid_request")


def test_form_content_type_with_charset_is_accepted(client, credential):
    response = post(client, {"grant_type": "client_credentials"}, content_type=f"{FORM}; charset=UTF-8",
                    HTTP_AUTHORIZATION=basic(*credential))
    assert response.status_code == 200


def test_secret_in_the_query_string_is_invalid_request(client, credential):
    client_id, secret = credential
    response = client.post(f"{URL}?{urlencode({'client_id': client_id, 'client_secret': secret})}",
                           data="grant_type=client_credentials", content_type=FORM)
    assert_oauth_error(response, 400, "invalid_request")


def test_get_is_not_allowed(client):
    response = client.get(URL)
    assert response.status_code == 405
    assert "POST" in response["Allow"]


# --- invalid_client ------------------------------------------------------------------------------------


def test_wrong_secret_by_basic_is_invalid_client_with_www_authenticate(client, credential):
    client_id, secret = credential
    body = assert_oauth_error(
        post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret + "x")),
        401, "invalid_client",
    )
    assert secret not in str(body)


def test_wrong_secret_by_form_fields_is_invalid_client(client, credential):
    client_id, _ = credential
    response = post(client, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "nope"})
    assert_oauth_error(response, 401, "invalid_client")


def test_unknown_client_is_invalid_client(client, credential):
    _, secret = credential
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic("svc_" + "a" * 24, secret))
    assert_oauth_error(response, 401, "invalid_client")


def test_revoked_credential_is_invalid_client(client, credential):
    client_id, secret = credential
    first = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret))
    assert first.status_code == 200
    service_credential_revoke(client_id=client_id)
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret))
    assert_oauth_error(response, 401, "invalid_client")


def test_no_client_authentication_is_invalid_client(client, credential):
    client_id, _ = credential
    assert_oauth_error(post(client, {"grant_type": "client_credentials"}), 401, "invalid_client")
    # A client_id alone is no authentication (we have no public clients).
    response = post(client, {"grant_type": "client_credentials", "client_id": client_id})
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "header",
    ["Basic not-base64!", "Basic " + base64.b64encode(b"no-colon-here").decode(), "Bearer abc.def.ghi",
     "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic"],
)
def test_malformed_or_foreign_authorization_is_invalid_client(client, header):
    assert_oauth_error(post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=header), 401,
                       "invalid_client")


# --- unsupported_grant_type, invalid_scope ----------------------------------------------------------------


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token", "CLIENT_CREDENTIALS",
                                        "urn:ietf:params:oauth:grant-type:jwt-bearer"])
def test_other_grant_types_are_unsupported(client, credential, grant_type):
    assert_oauth_error(post(client, {"grant_type": grant_type}, HTTP_AUTHORIZATION=basic(*credential)),
                       400, "unsupported_grant_type")


@pytest.mark.parametrize("scope", ["meetings:create", "mc:register admin", "mc:register\"x", "\u00e9"])
def test_a_scope_beyond_the_credential_is_invalid_scope(client, scope):
    created = service_credential_create(name="mc only", scopes=["mc:register"])
    response = post(client, {"grant_type": "client_credentials", "scope": scope},
                    HTTP_AUTHORIZATION=basic(created.credential.client_id, created.client_secret))
    assert_oauth_error(response, 400, "invalid_scope")


def test_mh_scope_on_an_mc_only_credential_is_invalid_scope(client):
    created = service_credential_create(name="mc only", scopes=["mc:register"])
    response = post(client, {"grant_type": "client_credentials", "scope": "mh:register"},
                    HTTP_AUTHORIZATION=basic(created.credential.client_id, created.client_secret))
    assert_oauth_error(response, 400, "invalid_scope")


# --- JSON bodies (Dark Tower's own token manager) ----------------------------------------------------------

JSON = "application/json"


def post_json(client, body, **extra):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(URL, data=data, content_type=JSON, **extra)


def test_the_original_token_managers_json_request_gets_a_token(client, credential):
    client_id, secret = credential
    response = post_json(client, {"grant_type": "client_credentials", "client_id": client_id,
                                  "client_secret": secret})
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    # The original's OAuthTokenResponse requires access_token, token_type and expires_in.
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS
    assert body["scope"] == "mc:register mh:register"
    assert token_verify(body["access_token"], audience=settings.JWT_SERVICE_AUDIENCE).subject == client_id


def test_a_json_request_may_narrow_the_scope_and_name_a_charset(client, credential):
    client_id, secret = credential
    response = client.post(URL, data=json.dumps({"grant_type": "client_credentials", "client_id": client_id,
                                                 "client_secret": secret, "scope": "mh:register"}),
                           content_type=f"{JSON}; charset=utf-8")
    assert response.status_code == 200
    assert response.json()["scope"] == "mh:register service.write.gc service.write.mc"


def test_a_json_request_with_basic_auth_is_accepted(client, credential):
    response = post_json(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(*credential))
    assert response.status_code == 200


def test_a_json_wrong_secret_is_invalid_client_and_audited(client, credential):
    client_id, _ = credential
    response = post_json(client, {"grant_type": "client_credentials", "client_id": client_id,
                                  "client_secret": "dtsec_wrong"})
    assert_oauth_error(response, 401, "invalid_client")
    refusal = AuditLog.objects.get(event_type="service_token_refused", target_id=client_id)
    assert refusal.error_message == "bad secret"


@pytest.mark.parametrize("body", [
    "{not json", "[]", '"client_credentials"', "null", "",
    '{"grant_type": "client_credentials", "grant_type": "client_credentials"}',
    '{"grant_type": ["client_credentials"]}',
    '{"grant_type": "client_credentials", "scope": 5}',
])
def test_a_malformed_json_request_is_invalid_request(client, credential, body):
    response = post_json(client, body, HTTP_AUTHORIZATION=basic(*credential))
    assert_oauth_error(response, 400, "invalid_request")


def test_json_grant_type_rules_are_the_forms(client, credential):
    client_id, secret = credential
    base = {"client_id": client_id, "client_secret": secret}
    assert_oauth_error(post_json(client, base), 400, "invalid_request")
    assert_oauth_error(post_json(client, {**base, "grant_type": "password"}), 400, "unsupported_grant_type")
    assert_oauth_error(post_json(client, {**base, "grant_type": "client_credentials", "scope": "controllers:write"}),
                       400, "invalid_scope")


def test_json_secret_beside_basic_is_invalid_request(client, credential):
    client_id, secret = credential
    response = post_json(client, {"grant_type": "client_credentials", "client_secret": secret},
                         HTTP_AUTHORIZATION=basic(client_id, secret))
    assert_oauth_error(response, 400, "invalid_request")


def test_json_secret_in_the_query_string_is_invalid_request(client, credential):
    client_id, secret = credential
    response = client.post(f"{URL}?client_secret={secret}", data=json.dumps(
        {"grant_type": "client_credentials", "client_id": client_id}), content_type=JSON)
    assert_oauth_error(response, 400, "invalid_request")


# --- rate limits ---------------------------------------------------------------------------------------


def _fresh_address() -> str:
    # A unique address per test run, so counters left in Redis by earlier runs never matter.
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{next(_addresses) % 250 + 1}"


def test_token_requests_are_limited_per_client(client, credential, settings):
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 2
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600  # no window boundary inside the test
    client_id, secret = credential
    statuses = [
        post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret),
             REMOTE_ADDR=_fresh_address()).status_code
        for _ in range(2)
    ]
    assert statuses == [200, 200]
    response = post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret),
                    REMOTE_ADDR=_fresh_address())
    assert_oauth_error(response, 429, "slow_down")
    assert 1 <= int(response["Retry-After"]) <= 3600
    # Another client is not affected.
    other = service_credential_create(name="other", scopes=["mc:register"])
    response = post(client, {"grant_type": "client_credentials"},
                    HTTP_AUTHORIZATION=basic(other.credential.client_id, other.client_secret))
    assert response.status_code == 200


def test_json_token_requests_share_the_per_client_limit(client, credential, settings):
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 2
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600
    client_id, secret = credential
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert post(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=basic(client_id, secret),
                REMOTE_ADDR=_fresh_address()).status_code == 200
    assert post_json(client, body, REMOTE_ADDR=_fresh_address()).status_code == 200
    response = post_json(client, body, REMOTE_ADDR=_fresh_address())
    assert_oauth_error(response, 429, "slow_down")
    assert 1 <= int(response["Retry-After"]) <= 3600


def test_token_requests_are_limited_per_address_even_without_credentials(client, credential, settings):
    settings.RATE_LIMIT_TOKEN_PER_IP = 3
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600
    address = _fresh_address()
    client_id, secret = credential
    assert post(client, {"grant_type": "client_credentials"}, REMOTE_ADDR=address).status_code == 401
    assert post(client, {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                HTTP_AUTHORIZATION=basic("svc_" + "b" * 24, "guess")).status_code == 401
    assert post(client, {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                HTTP_AUTHORIZATION=basic(client_id, secret)).status_code == 200
    # The fourth request from that address is refused even with good credentials: guessing is capped.
    response = post(client, {"grant_type": "client_credentials"}, REMOTE_ADDR=address,
                    HTTP_AUTHORIZATION=basic(client_id, secret))
    assert_oauth_error(response, 429, "slow_down")
    assert post(client, {"grant_type": "client_credentials"}, REMOTE_ADDR=_fresh_address(),
                HTTP_AUTHORIZATION=basic(client_id, secret)).status_code == 200
