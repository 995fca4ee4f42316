from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scoring.models import DEFAULT_INSTRUCTION, Domain, PromptSet
from scoring.prompt_io import PromptFileError, parse_field_map, read_rows
from scoring.sandbox import SandboxUnavailable
from scoring.services import ImportRejected, import_prompts

REFERENCE_CHECK_WORKERS = 2


class Command(BaseCommand):
    help = "Import prompts from JSONL, JSON, CSV or Parquet (or a Hub dataset name) into a set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="File, or a Hugging Face dataset name[:split]")
        parser.add_argument("--set", required=True, dest="set_name", help="Prompt set name (slug)")
        parser.add_argument("--domain", required=True, choices=[d.value for d in Domain])
        parser.add_argument("--license", required=True, help="SPDX identifier, e.g. MIT")
        parser.add_argument("--source", default="", help="Where the prompts come from (URL)")
        parser.add_argument("--field-map", default="", help="ours=theirs,... e.g. prompt=question")
        parser.add_argument("--skip-invalid", action="store_true", help="Import the valid rows")
        parser.add_argument(
            "--check-reference",
            action="store_true",
            help="Code: run each row's reference solution against its tests in the sandbox; "
            "a row whose reference does not pass is invalid",
        )
        plan = parser.add_argument_group("sampling plan (for a new set)")
        plan.add_argument("--temperatures", default="0.6", help="Comma-separated, e.g. 0.6,1.0")
        plan.add_argument("--samples-per-prompt", type=int, default=4)
        plan.add_argument(
            "--models", default="", help="Comma-separated ids or patterns; empty: any"
        )
        plan.add_argument("--max-tokens", type=int, default=32768)
        plan.add_argument("--priority", type=int, default=0)
        plan.add_argument(
            "--instruction",
            default=None,
            help="'r1' (step by step, \\boxed{} answer), 'none', or a template with {prompt}. "
            "Default: r1 for math, none otherwise.",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            temperatures = [float(t) for t in opts["temperatures"].split(",") if t.strip()]
        except ValueError:
            raise CommandError("--temperatures must be numbers, e.g. 0.6,1.0") from None
        instruction = opts["instruction"]
        if instruction is None:
            instruction = "r1" if opts["domain"] == Domain.MATH else "none"
        template = {"r1": DEFAULT_INSTRUCTION, "none": ""}.get(instruction, instruction)
        if template and "{prompt}" not in template:
            raise CommandError("--instruction template must contain {prompt}")
        if opts["check_reference"] and opts["domain"] != Domain.CODE:
            raise CommandError("--check-reference applies to code sets (--domain code)")

        prompt_set, created = PromptSet.objects.get_or_create(
            name=opts["set_name"],
            defaults={
                "domain": opts["domain"],
                "license": opts["license"],
                "source": opts["source"],
                "temperatures": temperatures,
                "samples_per_prompt": opts["samples_per_prompt"],
                "models_allowed": [m.strip() for m in opts["models"].split(",") if m.strip()],
                "max_tokens": opts["max_tokens"],
                "priority": opts["priority"],
                "instruction_template": template,
            },
        )
        if not created and prompt_set.domain != opts["domain"]:
            raise CommandError(
                f"Set {prompt_set.name!r} exists with domain {prompt_set.domain!r}, "
                f"not {opts['domain']!r}."
            )
        try:
            rows = read_rows(opts["path"], parse_field_map(opts["field_map"]))
            with self._progress(enabled=opts["check_reference"]) as progress:
                report = import_prompts(
                    prompt_set=prompt_set,
                    rows=rows,
                    skip_invalid=opts["skip_invalid"],
                    check_references=opts["check_reference"],
                    workers=REFERENCE_CHECK_WORKERS,
                    progress=progress,
                )
        except PromptFileError as exc:
            if created:
                prompt_set.delete()
            raise CommandError(str(exc)) from None
        except SandboxUnavailable as exc:
            if created:
                prompt_set.delete()
            raise CommandError(
                f"--check-reference needs the code sandbox, which cannot run here: {exc}"
            ) from None
        except ImportRejected as exc:
            if created:
                prompt_set.delete()
            for line, reason in exc.report.invalid[:50]:
                self.stderr.write(f"line {line}: {reason}")
            more = len(exc.report.invalid) - 50
            if more > 0:
                self.stderr.write(f"... and {more} more")
            raise CommandError(
                f"{len(exc.report.invalid)} invalid rows; nothing imported "
                "(fix them, or pass --skip-invalid)."
            ) from None
        for line, reason in report.invalid:
            self.stderr.write(f"skipped line {line}: {reason}")
        summary: dict[str, Any] = {
            "set": prompt_set.name,
            "created": report.created,
            "duplicates": report.duplicates,
            "invalid": len(report.invalid),
            "contaminated": report.contaminated,
            "near_duplicates": report.near_duplicates,
        }
        if opts["check_reference"]:
            summary["checked"] = report.checked
        self.stdout.write(json.dumps(summary))

    @contextmanager
    def _progress(self, *, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
        """A progress callback for the reference checks: a live bar on a terminal, else a
        line now and then (and always the last count)."""
        if not enabled:
            yield None
            return
        # The raw stream: OutputWrapper.write ends every write with a newline.
        stream = cast(IO[str], getattr(self.stderr, "_out", self.stderr))
        if stream.isatty() and _has_rich():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=Console(file=stream)) as bar:
                task = bar.add_task("checking reference solutions", total=None)

                def live(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                yield live
            return
        step = {"next": 0}

        def lines(done: int, total: int) -> None:
            if total and (done >= step["next"] or done == total):
                self.stderr.write(f"reference solutions checked: {done}/{total}")
                step["next"] = done + max(1, total // 10)

        yield lines


def _has_rich() -> bool:
    # rich comes with the worker extra; a server-only install prints plain lines.
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True
