"""Pages: a contributor's own account. Sign up, log in and out, password reset by email, the
profile, API tokens (shown once), nodes and the contributor's samples.

Everything a contributor learns here about the judgement of their samples goes through
contributors.selectors, which apply scoring.disclosure: no gold, no verdict details or scores,
and per-status numbers only over samples of closed prompts."""

from __future__ import annotations

import logging
import math
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm, UsernameField
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from contributors import selectors
from contributors.services import ServiceError, ensure_profile, issue_token, revoke_token, trust
from contributors.services import sign_up as sign_up_service
from contributors.services import update_profile as update_profile_service
from contributors.services.accounts import handle_problem, handle_taken, hf_username_problem
from contributors.throttling import allow, client_address
from scoring import disclosure
from scoring.models import SampleStatus

logger = logging.getLogger(__name__)

SAMPLES_PAGE_SIZE = 50
TOKENS_PAGE_SIZE = 50
PAGES = "thinkpool/account/"

# A ServiceError's code: the form field it is about.
_ERROR_FIELDS = {
    "username_taken": "username",
    "handle_taken": "handle",
    "invalid_handle": "handle",
    "invalid_hf_username": "hf_username",
}


# --- forms -----------------------------------------------------------------------------------


class ProfileFieldsMixin(forms.Form):
    """The profile's fields, checked as contributors.services.accounts checks them."""

    handle = forms.CharField(
        max_length=64,
        help_text="Public: how releases and the leaderboard name you. Letters, digits, - and _.",
        widget=forms.TextInput(attrs={"autocomplete": "nickname"}),
    )
    hf_username = forms.CharField(
        label="Hugging Face username",
        max_length=96,
        required=False,
        help_text="Optional.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    public_attribution = forms.BooleanField(
        label="Credit me by name in releases",
        required=False,
        initial=True,
        help_text="Otherwise your rows say 'anonymous'.",
    )

    owner: Any = None  # the user whose handle it is already (the profile form), or None

    def clean_handle(self) -> str:
        handle: str = self.cleaned_data["handle"]
        problem = handle_problem(handle)
        if problem is not None:
            raise forms.ValidationError(problem, code="invalid_handle")
        if handle_taken(handle, exclude_user=self.owner):
            raise forms.ValidationError("This handle is taken; choose another.", code="taken")
        return handle

    def clean_hf_username(self) -> str:
        name: str = self.cleaned_data["hf_username"]
        problem = hf_username_problem(name)
        if problem is not None:
            raise forms.ValidationError(problem, code="invalid_hf_username")
        return name

    def add_service_error(self, error: ServiceError) -> None:
        self.add_error(_ERROR_FIELDS.get(error.code), error.message)


class SignUpForm(UserCreationForm, ProfileFieldsMixin):  # type: ignore[type-arg]
    """Django's user creation (username unique in any letter case, password twice and run
    through the password validators), an email for password resets, and the profile."""

    class Meta:
        model = get_user_model()
        fields = ("username", "email")
        field_classes = {"username": UsernameField}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].required = True
        self.fields["email"].help_text = "Only for password resets; never shown."
        self.order_fields(
            [
                "username",
                "email",
                "password1",
                "password2",
                "handle",
                "hf_username",
                "public_attribution",
            ]
        )


class ProfileForm(ProfileFieldsMixin):
    def __init__(self, *args: Any, owner: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Token name",
        max_length=100,
        help_text="Which machine or worker uses it, e.g. gpu-box-1.",
    )


class SampleFilterForm(forms.Form):
    status = forms.ChoiceField(
        label="Status",
        required=False,
        choices=[
            ("", "any"),
            (disclosure.AWAITING_DISCLOSURE, "awaiting disclosure (prompt still open)"),
            *[(value, label.lower()) for value, label in SampleStatus.choices],
        ],
    )


# --- sign up, log in, password reset --------------------------------------------------------


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("profile")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        address = client_address(request) or "unknown"
        if not allow("signup", address, limit=SIGNUPS_PER_ADDRESS, window_s=3600):
            form.add_error(None, "Too many accounts were made from your address lately; try later.")
            return render(request, PAGES + "signup.html", {"form": form}, status=429)
        try:
            user = sign_up_service(
                username=data["username"],
                email=data["email"],
                password=data["password1"],
                handle=data["handle"],
                hf_username=data["hf_username"],
                public_attribution=data["public_attribution"],
            )
        except ServiceError as error:
            form.add_service_error(error)
        else:
            # The password was just set: no need to check it again (a second slow hash).
            login(request, user, backend=_MODEL_BACKEND)
            messages.success(request, "Welcome to Thinkpool. Create a token to run a worker.")
            return redirect("profile")
    return render(request, PAGES + "signup.html", {"form": form})


_MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


# --- the contributor's own pages --------------------------------------------------------------


@login_required
@never_cache
def profile(request: HttpRequest) -> HttpResponse:
    current = ensure_profile(user=request.user)
    if request.method == "POST":
        form = ProfileForm(request.POST, owner=request.user)
        if form.is_valid():
            try:
                update_profile_service(user=request.user, **form.cleaned_data)
            except ServiceError as error:
                form.add_service_error(error)
            else:
                messages.success(request, "Profile saved.")
                return redirect("profile")
    else:
        form = ProfileForm(
            owner=request.user,
            initial={
                "handle": current.handle,
                "hf_username": current.hf_username,
                "public_attribution": current.public_attribution,
            },
        )
    return render(
        request,
        PAGES + "profile.html",
        {
            "form": form,
            "profile": current,
            "summary": selectors.sample_summary(user=request.user),
            "reputation": trust.standing(user=request.user),
        },
    )


@login_required
@never_cache
def tokens(request: HttpRequest) -> HttpResponse:
    """GET lists the tokens; POST creates one and shows it on this response only (the raw
    token is never stored: the row keeps its digest)."""
    raw_token = None
    if request.method == "POST":
        form = TokenForm(request.POST)
        if form.is_valid():
            _, raw_token = issue_token(user=request.user, name=form.cleaned_data["name"])
            form = TokenForm()
    else:
        form = TokenForm()
    page = Paginator(selectors.user_tokens(user=request.user), TOKENS_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        PAGES + "tokens.html",
        {
            "form": form,
            "page": page,
            "raw_token": raw_token,
            "server": f"{request.scheme}://{request.get_host()}",
        },
    )


@login_required
@require_POST
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = selectors.token_for(user=request.user, token_id=token_id)
    revoke_token(token=token)
    messages.success(request, f"Token {token.prefix}… revoked: workers using it stop now.")
    return redirect("tokens")


@login_required
@never_cache
def nodes(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        PAGES + "nodes.html",
        {"nodes": selectors.node_overview(user=request.user), "shown": selectors.NODES_SHOWN},
    )


@login_required
@never_cache
def my_samples(request: HttpRequest) -> HttpResponse:
    form = SampleFilterForm(request.GET or None)
    status = None
    if form.is_valid():
        status = form.cleaned_data["status"] or None
    number = _page_number(request.GET.get("page"))
    if number > MAX_SAMPLES_PAGE:  # never an OFFSET past what a person pages through
        raise Http404
    count, rows = selectors.sample_page(
        user=request.user, page=number, page_size=SAMPLES_PAGE_SIZE, status=status
    )
    pages = max(1, math.ceil(count / SAMPLES_PAGE_SIZE))
    if number > pages:
        raise Http404
    return render(
        request,
        PAGES + "my_samples.html",
        {
            "form": form,
            "rows": rows,
            "count": count,
            "number": number,
            "pages": pages,
            "status": status or "",
        },
    )


# 50 a page: 100,000 samples deep. Farther needs a filter (status) or the API's `since`.
MAX_SAMPLES_PAGE = 2000


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with limits: each request sends a mail, so a stranger could flood someone's
    inbox (or ours) with them. Over a limit the page answers exactly as if the mail was sent
    (it never says whether an address has an account) and sends nothing."""

    def form_valid(self, form: Any) -> HttpResponse:
        address = client_address(self.request) or "unknown"
        email = form.cleaned_data["email"].strip().lower()
        if allow(
            "password-reset-address", address, limit=RESETS_PER_ADDRESS, window_s=3600
        ) and allow("password-reset-email", email, limit=RESETS_PER_EMAIL, window_s=3600):
            return super().form_valid(form)
        logger.warning("password reset refused: over the limit for %s / %s", address, email)
        return HttpResponseRedirect(self.get_success_url())


# Per hour: resets asked from one client address, and mails sent to one address.
RESETS_PER_ADDRESS = 20
RESETS_PER_EMAIL = 3
# Per hour and client address: accounts made.
SIGNUPS_PER_ADDRESS = 10


def _page_number(value: str | None) -> int:
    try:
        number = int(value or 1) if len(value or "") <= 9 else MAX_SAMPLES_PAGE + 1
    except ValueError:
        return 1
    return max(number, 1)


urlpatterns = [
    path("signup/", signup, name="signup"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name=PAGES + "login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    # POST only (Django's LogoutView): the site's header posts a form.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset/",
        PasswordResetView.as_view(
            template_name=PAGES + "password_reset_form.html",
            email_template_name=PAGES + "password_reset_email.txt",
            subject_template_name=PAGES + "password_reset_subject.txt",
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name=PAGES + "password_reset_done.html"),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name=PAGES + "password_reset_confirm.html"
        ),
        name="password_reset_confirm",
    ),
    path(
        "reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name=PAGES + "password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
    path("me/", profile, name="profile"),
    path("me/tokens/", tokens, name="tokens"),
    path("me/tokens/<int:token_id>/revoke/", revoke, name="token-revoke"),
    path("me/nodes/", nodes, name="nodes"),
    path("me/samples/", my_samples, name="my-samples"),
]
