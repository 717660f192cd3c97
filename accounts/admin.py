"""Users, their OAuth links and API keys; the fleet's service credentials; our signing keys.

Secrets never reach a page: provider tokens, key and secret hashes and private keys are excluded from every
form and list. A new API key or client secret is shown once, on the page that answers the request that made it
(api_key_create, service_credential_create, service_credential_rotate_secret), marked no-store; never through
django.contrib.messages, whose cookie is signed but not encrypted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers

from accounts.models import ApiKey, OAuthProvider, ServiceCredential, SigningKey, User
from accounts.services.api_keys import api_key_check, api_key_create, api_key_revoke
from accounts.services.personal_data import VIA_ADMIN, user_erase
from accounts.services.service_tokens import (
    CLIENT_ID_PATTERN,
    SERVICE_SCOPES,
    service_credential_create,
    service_credential_revoke,
    service_credential_rotate_secret,
)
from accounts.services.users import ALL_SCOPES, normalize_email
from accounts.signing import public_jwk, signing_key_revoke, signing_key_rotate
from darktower.admin_tools import confirmed_action
from darktower.errors import DomainError

# The mixins' bases as the checker sees them (what they are mixed into); at run time they derive from object.
if TYPE_CHECKING:
    _FormBase = forms.BaseForm
    _ModelAdminBase = admin.ModelAdmin[Any]
else:
    _FormBase = _ModelAdminBase = object


class _EmailFormMixin(_FormBase):
    def clean_email(self) -> str:
        # create_user stores addresses lower-cased and logins look them up so.
        return normalize_email(self.cleaned_data["email"])


class UserCreateForm(_EmailFormMixin, AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "display_name")


class UserEditForm(_EmailFormMixin, UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin on our model: email is the login, `password` and `last_login` are stored in the
    users table's password_hash / last_login_at columns (mapped by the model), so Django's password views work."""

    form = UserEditForm
    add_form = UserCreateForm
    list_display = ("email", "display_name", "is_staff", "is_superuser", "is_active", "last_login", "created_at")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")
    search_fields = ("email", "display_name")
    ordering = ("email",)
    readonly_fields = ("last_login", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("display_name", "metadata")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "created_at", "updated_at")}),
    )
    add_fieldsets = (
        (None, {
            "classes": ("wide",),
            "fields": ("email", "display_name", "usable_password", "password1", "password2"),
        }),
    )
    actions = ("erase_action",)

    # Deleting a user is erasing them, whichever button does it: Django's delete (one user or the bulk action)
    # runs the same service as the erase action, so nothing the user left elsewhere outlives them.
    def delete_model(self, request: HttpRequest, obj: User) -> None:
        user_erase(user_id=obj.pk, actor_user_id=request.user.pk, via=VIA_ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user_id in queryset.values_list("pk", flat=True):
            user_erase(user_id=user_id, actor_user_id=request.user.pk, via=VIA_ADMIN)

    @admin.action(description="Erase selected users and their personal data", permissions=["delete"])
    def erase_action(self, request: HttpRequest, queryset: QuerySet[User]) -> HttpResponse | None:
        found = {str(pk) for pk in queryset.values_list("pk", flat=True)}
        gone = len(set(request.POST.getlist(ACTION_CHECKBOX_NAME)) - found)
        if gone:
            # Erased since the list was shown (here or at another door): a repeat is a no-op, and says so.
            self.message_user(request, f"{gone} selected user(s) no longer exist: nothing to erase.", messages.INFO)
            if not found:
                return None

        def perform(user: User) -> str:
            erasure = user_erase(user_id=user.pk, actor_user_id=request.user.pk, via=VIA_ADMIN)
            if not erasure.erased:
                return f"User {user.pk} no longer exists: nothing to erase."
            return f"User {user.pk} erased."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="erase_action",
            title="Erase users",
            description=(
                "Each user is removed with their API keys and linked providers; the meetings they host end and "
                "their recordings are deleted; their participations elsewhere lose their name and address. Audit "
                "rows stay, without anything that names them. This cannot be undone."
            ),
            perform=perform,
        )


@admin.register(OAuthProvider)
class OAuthProviderAdmin(admin.ModelAdmin):
    """Read-only; the encrypted provider tokens are not among the fields at all."""

    list_display = ("provider", "provider_user_id", "user", "token_expires_at", "created_at")
    list_filter = ("provider",)
    list_select_related = ("user",)
    search_fields = ("provider_user_id", "user__email")
    fields = ("user", "provider", "provider_user_id", "token_expires_at", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@dataclass(frozen=True)
class ShownSecret:
    """A secret to show once, and which credential it belongs to."""

    label: str
    secret: str = field(repr=False)


# The request attribute that carries a secret made by create_through_service to response_add: it lives as long
# as the request, in memory only.
_SHOWN_ONCE = "dt_secrets_shown_once"


def secrets_page(
    modeladmin: admin.ModelAdmin, request: HttpRequest, *, title: str, description: str, secrets: list[ShownSecret]
) -> TemplateResponse:
    """The page that shows new secrets once, as the answer to the request that made them. No cache or browser
    history may keep it (no-store); nothing of it goes into a message, a cookie or the session."""
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request), "title": title, "description": description,
        "secrets": secrets, "opts": opts,
    }
    request.current_app = modeladmin.admin_site.name
    response = TemplateResponse(request, "admin/accounts/secrets_shown_once.html", context)
    add_never_cache_headers(response)
    return response


class _CreateThroughServiceMixin(_ModelAdminBase):
    """The add form's object is created by a service (which also writes the audit row), not by form.save(); the
    secret the service returns is shown on the page that answers the add form (`show_once`)."""

    shown_once_title = ""
    shown_once_description = ""

    def create_through_service(self, request: HttpRequest, form: forms.ModelForm) -> Any:
        raise NotImplementedError

    def show_once(self, request: HttpRequest, shown: ShownSecret) -> None:
        setattr(request, _SHOWN_ONCE, [shown])

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        shown = getattr(request, _SHOWN_ONCE, None)
        if not shown:
            return super().response_add(request, obj, post_url_continue)
        return secrets_page(
            self, request, title=self.shown_once_title, description=self.shown_once_description,
            secrets=shown,
        )

    def save_form(self, request: HttpRequest, form: forms.ModelForm, change: bool) -> Any:
        if change:
            return super().save_form(request, form, change)
        return self.create_through_service(request, form)

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in sorted(ALL_SCOPES)], widget=forms.CheckboxSelectMultiple,
        help_text="A subset of the user's own scopes.",
    )

    class Meta:
        model = ApiKey
        fields = ("user", "name", "expires_at")

    def clean(self) -> dict[str, Any]:
        """The service's own rules (api_key_check), shown as form errors; the service checks them again when
        it creates the key."""
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        user, scopes = cleaned.get("user"), cleaned.get("scopes")
        if user and scopes and not self.errors:
            try:
                api_key_check(user=user, scopes=scopes, expires_at=cleaned.get("expires_at"))
            except DomainError as error:
                _add_domain_error(self, error)
        return cleaned


def _add_domain_error(form: forms.BaseForm, error: DomainError) -> None:
    """A service's refusal on the form: field errors on their fields, the rest above the form."""
    placed = False
    for name, field_messages in error.fields.items():
        if name in form.fields:
            form.add_error(name, field_messages)
            placed = True
    if not placed:
        form.add_error(None, error.message)


@admin.register(ApiKey)
class ApiKeyAdmin(_CreateThroughServiceMixin, admin.ModelAdmin):
    list_display = ("key_prefix", "name", "user", "scopes_list", "is_active", "expires_at", "last_used_at",
                    "created_at")
    list_filter = ("is_active",)
    list_select_related = ("user",)
    search_fields = ("key_prefix", "name", "user__email")
    raw_id_fields = ("user",)
    fields = ("key_prefix", "name", "user", "scopes", "is_active", "expires_at", "last_used_at", "created_at")
    actions = ("revoke_action",)
    ordering = ("-created_at",)
    shown_once_title = "New API key"
    shown_once_description = "Only its hash is stored. Send it as `Authorization: ApiKey <key>`."

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
            kwargs["fields"] = None
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ("user", "name", "scopes", "expires_at")})]
        return super().get_fieldsets(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are created and revoked, never edited

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        try:
            return super().add_view(request, form_url, extra_context)
        except DomainError as error:
            # The form checked the same rules a moment before the service did (under its lock): another
            # request took the user's last place in between. Nothing was created; say so on the form's page.
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.delete_apikey")

    @admin.display(description="scopes")
    def scopes_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def create_through_service(self, request: HttpRequest, form: forms.ModelForm) -> ApiKey:
        data = form.cleaned_data
        created = api_key_create(
            user=data["user"], name=data["name"], scopes=data["scopes"], expires_at=data.get("expires_at"),
            actor_user_id=request.user.pk,
        )
        self.show_once(request, ShownSecret(label=str(created.api_key), secret=created.raw_key))
        return created.api_key

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        def perform(key: ApiKey) -> str:
            assert request.user.pk is not None  # the admin serves signed-in staff only
            api_key_revoke(key_id=key.pk, owner_user_id=key.user_id, actor_user_id=request.user.pk)
            return f"{key.key_prefix}: revoked."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset.select_related("user"), action="revoke_action",
            title="Revoke API keys", description="These keys stop working at once.", perform=perform,
        )


class ServiceCredentialCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in sorted(SERVICE_SCOPES)], widget=forms.CheckboxSelectMultiple,
        help_text="One of them for a fleet of Dark Tower's own MCs or MHs: its tokens then carry that service_type.",
    )
    client_id = forms.RegexField(
        regex=CLIENT_ID_PATTERN, required=False, max_length=64,
        help_text="Optional: the client ID the fleet is configured with (e.g. meeting-controller); "
        "3 to 64 lower-case letters, digits, '.', '_' or '-'. Empty: a random one.",
    )

    class Meta:
        model = ServiceCredential
        fields = ("name",)

    def clean_client_id(self) -> str | None:
        # The service refuses a taken id too (Conflict); asked here, it is a field error instead of a failed save.
        client_id = self.cleaned_data.get("client_id") or None
        if client_id and ServiceCredential.objects.filter(client_id=client_id).exists():
            raise forms.ValidationError("A service credential with this client ID exists already.")
        return client_id


@admin.register(ServiceCredential)
class ServiceCredentialAdmin(_CreateThroughServiceMixin, admin.ModelAdmin):
    list_display = ("client_id", "name", "scopes_list", "is_active", "last_used_at", "created_at")
    list_filter = ("is_active",)
    search_fields = ("client_id", "name")
    fields = ("client_id", "name", "scopes", "is_active", "last_used_at", "created_at", "updated_at")
    actions = ("rotate_secret_action", "revoke_action")
    ordering = ("-created_at",)
    shown_once_title = "New service credential"
    shown_once_description = "Only its hash is stored. The client authenticates with its client ID and this secret."

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ServiceCredentialCreateForm
            kwargs["fields"] = None
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": ("name", "scopes", "client_id")})]
        return super().get_fieldsets(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail and token blacklist refer to the client id

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_servicecredential")

    @admin.display(description="scopes")
    def scopes_list(self, obj: ServiceCredential) -> str:
        return ", ".join(obj.scopes)

    def create_through_service(self, request: HttpRequest, form: forms.ModelForm) -> ServiceCredential:
        created = service_credential_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
            client_id=form.cleaned_data.get("client_id"), actor_user_id=request.user.pk,
        )
        self.show_once(request, ShownSecret(label=created.credential.client_id, secret=created.client_secret))
        return created.credential

    @admin.action(description="Revoke selected credentials (and their live tokens)", permissions=["revoke"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet[ServiceCredential]) -> HttpResponse | None:
        def perform(credential: ServiceCredential) -> str:
            result = service_credential_revoke(client_id=credential.client_id, actor_user_id=request.user.pk)
            return f"{credential.client_id}: revoked, {result.tokens_revoked} live token(s) blacklisted."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="revoke_action",
            title="Revoke service credentials",
            description="These clients get no new tokens, and the tokens they hold stop working at once.",
            perform=perform,
        )

    @admin.action(description="Rotate the client secret of selected credentials", permissions=["revoke"])
    def rotate_secret_action(
        self, request: HttpRequest, queryset: QuerySet[ServiceCredential]
    ) -> HttpResponse | None:
        shown: list[ShownSecret] = []

        def perform(credential: ServiceCredential) -> str:
            rotated = service_credential_rotate_secret(client_id=credential.client_id, actor_user_id=request.user.pk)
            shown.append(ShownSecret(label=credential.client_id, secret=rotated.client_secret))
            return f"Client {credential.client_id}: the old secret no longer works; the new one is below."

        response = confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="rotate_secret_action",
            title="Rotate client secrets",
            description="Each client gets a new secret, shown once on the next page. The old secret is refused at "
            "once; tokens already issued keep working until they expire (revoke to cut them off too).",
            perform=perform,
        )
        if response is not None or not shown:
            return response
        return secrets_page(
            self, request, title="New client secrets", secrets=shown,
            description="Each client's old secret is refused from now on.",
        )


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    """Public information only; the private key never leaves the database. Rotate from the list's button; revoke
    a compromised key with the list's action."""

    list_display = ("kid", "algorithm", "is_active", "created_at", "retired_at", "publish_until")
    list_filter = ("is_active",)
    fields = ("kid", "algorithm", "public_jwk", "is_active", "created_at", "retired_at", "publish_until")
    readonly_fields = ("public_jwk",)
    ordering = ("-created_at",)
    actions = ("revoke_action",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retired keys leave the JWKS by publish_until, not by deletion

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_signingkey")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Ends every token of the key, the fleet's and users' alike: the same permission as rotation.
        return request.user.has_perm("accounts.change_signingkey")

    @admin.action(description="Revoke selected keys (every token they signed stops working)", permissions=["revoke"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> HttpResponse | None:
        def perform(key: SigningKey) -> str:
            revoked = signing_key_revoke(kid=key.kid, actor_user_id=request.user.pk)
            replaced = f"; {revoked.replacement_kid} is the active key now" if revoked.replacement_kid else ""
            return f"{key.kid}: revoked, its tokens are refused{replaced}."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="revoke_action",
            title="Revoke signing keys",
            description="For a compromised key. Each key leaves the JWKS at once and every token it signed is "
            "refused: here at once, by every other process within SIGNING_KEY_CACHE_SECONDS. Revoking the "
            "active key makes a new one active first; services and users fetch new tokens.",
            perform=perform,
        )

    @admin.display(description="public JWK")
    def public_jwk(self, obj: SigningKey) -> str:
        return json.dumps(public_jwk(obj))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_rotate": self.has_rotate_permission(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[Any]:
        rotate = path("rotate/", self.admin_site.admin_view(self.rotate_view), name="accounts_signingkey_rotate")
        return [rotate, *super().get_urls()]

    def rotate_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_rotate_permission(request):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("post") == "yes":
            key = signing_key_rotate(actor_user_id=request.user.pk)
            self.message_user(request, f"New signing key {key.kid} is active; the old one stays published until "
                                       "its tokens expire.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:accounts_signingkey_changelist"))
        response = confirmed_action(
            modeladmin=self, request=request, queryset=SigningKey.objects.none(), action="", title="Rotate signing key",
            description="A new key signs tokens from now on. The current one is retired but stays in the JWKS "
            "until every token it signed has expired.",
            perform=lambda key: "",
        )
        assert response is not None
        return response
