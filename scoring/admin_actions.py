"""Pieces the maintainers' admin shares (scoring/admin.py, contributors/admin.py): the reason
a decision is taken for, the intermediate page that asks for it, and a list filter that takes
a typed value instead of listing every choice (a filter by contributor must not load every
user).

Every string shown is escaped by the template engine: rows of the confirmation page hold
untrusted text (handles, model names, reasons).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

# Rows the confirmation page lists (a select-across may hold millions; the count says so).
SHOWN_ROWS = 100
REASON_MAX = 2000


class ReasonActionForm(helpers.ActionForm):
    """The changelist's action bar, with the reason the action is taken for: kept in the
    audit trail with it. Optional here; the actions that need one ask for it on their
    confirmation page."""

    reason = forms.CharField(
        label="Reason (kept in the audit trail):",
        required=False,
        max_length=REASON_MAX,
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label="Reason",
        max_length=REASON_MAX,
        error_messages={"required": "Say why: a reason is required."},
        help_text="Kept in the audit trail with who did this, when and to which records.",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )

    def __init__(self, *args: Any, required: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = required

    def clean_reason(self) -> str:
        reason: str = (self.cleaned_data.get("reason") or "").strip()
        if self.fields["reason"].required and not reason:
            raise forms.ValidationError("Say why: a reason is required.")
        return reason


def action_reason(request: HttpRequest) -> str:
    """The reason typed in the action bar (or on the confirmation page), trimmed."""
    return (request.POST.get("reason") or "").strip()[:REASON_MAX]


def confirm_with_reason(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    intro: str,
    button: str,
    columns: Sequence[str],
    row: Callable[[Any], Sequence[Any]],
    required: bool = True,
    warning: str = "",
) -> tuple[str | None, HttpResponse | None]:
    """The admin's intermediate-page pattern for an action that needs a reason: returns
    (reason, None) once the maintainer has confirmed it with a valid reason, else
    (None, the page) listing the selected rows (at most SHOWN_ROWS, with the total count) and
    asking for the reason. The page posts back to the changelist (its URL keeps the filters,
    which a select-across needs) with the action, the selection and `apply`."""
    form = ReasonForm(
        request.POST if "apply" in request.POST else None,
        initial={"reason": action_reason(request)},
        required=required,
    )
    if "apply" in request.POST and form.is_valid():
        return form.cleaned_data["reason"], None
    select_across = request.POST.get("select_across") in ("1", "True", "true", "on")
    shown = list(queryset[:SHOWN_ROWS])
    count = queryset.count() if select_across or len(shown) == SHOWN_ROWS else len(shown)
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": title,
        "intro": intro,
        "warning": warning,
        "button": button,
        "form": form,
        "action": action,
        "select_across": select_across,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "columns": list(columns),
        "rows": [[str(value) for value in row(obj)] for obj in shown],
        "count": count,
        "more": max(0, count - len(shown)),
    }
    return None, TemplateResponse(request, "admin/scoring/confirm_reason.html", context)


class InputFilter(admin.ListFilter):
    """A list filter that takes one typed value (an exact match) instead of listing every
    choice: `lookup(value)` returns the filter to apply. Rendered as a small GET form that
    keeps the changelist's other parameters."""

    parameter_name = ""
    label = ""
    template = "admin/scoring/input_filter.html"

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: type[Model], model_admin: Any
    ) -> None:
        super().__init__(request, params, model, model_admin)
        if self.parameter_name in params:
            value = params.pop(self.parameter_name)
            value = value[-1] if isinstance(value, list) else value
            self.used_parameters[self.parameter_name] = str(value).strip()

    def value(self) -> str:
        return str(self.used_parameters.get(self.parameter_name) or "")

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name]

    def lookup(self, request: HttpRequest, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return self.lookup(request, queryset, value) if value else queryset

    def choices(self, changelist: Any) -> Iterator[Any]:
        keep = [
            (name, value)
            for name, values in self.request.GET.lists()
            if name not in (self.parameter_name, "p", "e")
            for value in values
        ]
        yield {
            "parameter": self.parameter_name,
            "label": self.label or self.title,
            "value": self.value(),
            "hidden": keep,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name, "p"]),
            # The admin's filter sidebar reads these of every choice.
            "selected": bool(self.value()),
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": self.value(),
        }
