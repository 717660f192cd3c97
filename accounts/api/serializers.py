"""Request and response shapes of login, logout, /me and API keys."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import ApiKey, OAuthProvider, User
from accounts.services.users import ALL_SCOPES
from darktower.api.serializers import StrictCharField, StrictSerializer


class LoginRequest(StrictSerializer):
    email = serializers.EmailField(max_length=255)
    password = StrictCharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class EraseMeRequest(StrictSerializer):
    password = StrictCharField(
        required=False, max_length=4096, trim_whitespace=False, style={"input_type": "password"},
        help_text="Your password; without it the bearer token must be recent (ERASURE_REAUTHENTICATION_SECONDS).",
    )


class AccessTokenResponse(serializers.Serializer):
    access_token = serializers.CharField()
    token_type = serializers.CharField(help_text="Always Bearer.")
    expires_in = serializers.IntegerField(help_text="Seconds until the token expires.")
    scope = serializers.CharField(help_text="Space-separated scopes the token carries.")


class MeResponse(serializers.ModelSerializer):
    last_login_at = serializers.DateTimeField(source="last_login", read_only=True, allow_null=True)
    scopes = serializers.SerializerMethodField(help_text="Scopes of the credential used for this request.")
    authenticated_by = serializers.SerializerMethodField(help_text="user (bearer token) or api_key.")

    class Meta:
        model = User
        fields = [
            "user_id", "email", "display_name", "is_staff", "scopes", "authenticated_by", "last_login_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_scopes(self, user: User) -> list[str]:
        return sorted(self.context["principal"].scopes)

    def get_authenticated_by(self, user: User) -> str:
        return self.context["principal"].kind


class ApiKeyCreateRequest(StrictSerializer):
    name = StrictCharField(max_length=255)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(ALL_SCOPES)), min_length=1, max_length=len(ALL_SCOPES),
        help_text="A subset of your own scopes.",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="In the future; none: never.")


class ApiKeySerializer(serializers.ModelSerializer):
    active = serializers.BooleanField(source="usable", read_only=True, help_text="Not revoked and not expired.")
    created = serializers.DateTimeField(source="created_at", read_only=True)
    last_used = serializers.DateTimeField(source="last_used_at", read_only=True, allow_null=True)
    expires = serializers.DateTimeField(source="expires_at", read_only=True, allow_null=True)

    class Meta:
        model = ApiKey
        fields = ["key_id", "key_prefix", "name", "scopes", "created", "last_used", "expires", "active"]
        read_only_fields = fields


class ApiKeyCreatedResponse(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The whole key. Shown this once; only its hash is stored.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class OidcProviderResponse(serializers.Serializer):
    name = serializers.CharField(help_text="The provider's short name, as in its URLs.")
    display_name = serializers.CharField()
    start_url = serializers.CharField(help_text="Open this in a browser to sign in; the flow ends at callback_url.")
    callback_url = serializers.CharField(help_text="Answers with an access token, as POST /api/v1/auth/login.")


class OAuthProviderLinkSerializer(serializers.ModelSerializer):
    link_id = serializers.IntegerField(source="id", read_only=True)
    subject = serializers.CharField(source="provider_user_id", read_only=True)
    created = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = OAuthProvider
        fields = ["link_id", "provider", "subject", "created"]
        read_only_fields = fields
