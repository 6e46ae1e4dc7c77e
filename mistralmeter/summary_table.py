"""Summary tables of a dataset evaluation result, one per model, rendered with rich.

The input is the ``result`` object of a finished dataset evaluation job: ``simulated``,
``dataset`` and ``summary`` keyed by model, where timing, token and quality values are
statistics objects (n, mean, std_dev, min, max, p50, p95, p99, ci_low, ci_high). Missing or
null values print as "n/a".
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

NOT_AVAILABLE = "n/a"
SIMULATED_MARK = "SIMULATED"
SIMULATED_NOTE = (
    "SIMULATED: these responses came from the bundled simulator, not from a real model. "
    "Do not compare them with measurements of real models."
)


def build_summary_tables(result: dict[str, Any]) -> list[Table]:
    """Return one table per model in result["summary"], titled with the model and dataset."""
    simulated = bool(result.get("simulated"))
    dataset = result.get("dataset") or {}
    summary = result.get("summary") or {}
    return [
        _model_table(model, model_summary or {}, dataset, simulated)
        for model, model_summary in summary.items()
    ]


def render_summary(result: dict[str, Any], console: Console) -> None:
    """Print the model tables and, when the result is simulated, a warning under them."""
    tables = build_summary_tables(result)
    if not tables:
        console.print("The result has no summary: no model produced a run.")
        return
    renderables: list[Any] = list(tables)
    if result.get("simulated"):
        renderables.append(Text(SIMULATED_NOTE, style="bold red"))
    console.print(Group(*renderables))


def summary_text(result: dict[str, Any], *, width: int = 100) -> str:
    """Return the summary as plain text, as it prints on a terminal of the given width."""
    output = io.StringIO()
    console = Console(file=output, width=width, color_system=None, force_terminal=False)
    render_summary(result, console)
    return output.getvalue()


def _model_table(
    model: str, summary: dict[str, Any], dataset: dict[str, Any], simulated: bool
) -> Table:
    title = Text(f"{model} on {_dataset_label(dataset)}")
    if simulated:
        title.append(f"  [{SIMULATED_MARK}]", style="bold red")
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("Metric")
    table.add_column("Value", justify="right")

    latency = summary.get("latency") or {}
    quality = summary.get("quality") or {}
    for label, value in (
        ("Runs", _format_runs(summary.get("runs") or {})),
        ("Error rate", format_rate(summary.get("error_rate"))),
        ("Latency p50 (ms)", format_number(_stat(latency, "total_ms", "p50"), 0)),
        ("Latency p95 (ms)", format_number(_stat(latency, "total_ms", "p95"), 0)),
        ("Time to first token p50 (ms)", format_number(_stat(latency, "time_to_first_token_ms", "p50"), 0)),
        ("Tokens per second (mean)", format_number(_stat(latency, "tokens_per_second", "mean"), 1)),
        ("Quality 0-10 (mean [95% CI over prompts])",
         format_mean_interval(quality.get("score_by_prompt") or quality.get("score"))),
        ("Unscored rate", format_rate(quality.get("unscored_rate"))),
        ("Cost (USD, estimate)", _format_cost(summary.get("cost") or {})),
    ):
        table.add_row(label, value)

    note = (summary.get("measurement") or {}).get("note")
    if note:
        table.caption = f"Timing note: {note}"
    return table


def _dataset_label(dataset: dict[str, Any]) -> str:
    name = dataset.get("name") or "an unnamed dataset"
    version = dataset.get("version")
    if not version:
        return str(name)
    # The version is a content hash such as "sha256:<64 hex digits>"; twelve digits identify it.
    algorithm, _, digest = str(version).rpartition(":")
    short = f"{algorithm}:{digest[:12]}" if algorithm else digest[:12]
    return f"{name} (version {short})"


def _stat(group: dict[str, Any], metric: str, key: str) -> float | None:
    statistics = group.get(metric)
    if not isinstance(statistics, dict):
        return None
    value = statistics.get(key)
    return value if isinstance(value, (int, float)) else None


def format_number(value: float | None, digits: int) -> str:
    """Format a number with thousands separators and the given decimals, or "n/a" for None."""
    if value is None:
        return NOT_AVAILABLE
    return f"{value:,.{digits}f}"


def format_rate(value: float | None) -> str:
    """Format a fraction from 0 to 1 as a percentage with one decimal, or "n/a"."""
    if not isinstance(value, (int, float)):
        return NOT_AVAILABLE
    return f"{value * 100:.1f}%"


def format_mean_interval(statistics: dict[str, Any] | None, digits: int = 1) -> str:
    """Format a statistics object as "mean [ci_low, ci_high]", e.g. "7.2 [6.9, 7.5]".

    The interval is left out when the statistics carry none (fewer than two values).
    """
    if not isinstance(statistics, dict) or statistics.get("mean") is None:
        return NOT_AVAILABLE
    text = format_number(statistics["mean"], digits)
    low, high = statistics.get("ci_low"), statistics.get("ci_high")
    if low is not None and high is not None:
        text += f" [{format_number(low, digits)}, {format_number(high, digits)}]"
    return text


def _format_runs(runs: dict[str, Any]) -> str:
    total = runs.get("total")
    if total is None:
        return NOT_AVAILABLE
    return f"{total} ({runs.get('succeeded', 0)} succeeded, {runs.get('failed', 0)} failed)"


def _format_cost(cost: dict[str, Any]) -> str:
    candidate = cost.get("candidate_usd")
    judge = cost.get("judge_usd")
    if candidate is None and judge is None:
        return NOT_AVAILABLE
    total = (candidate or 0.0) + (judge or 0.0)
    parts = [f"${total:.4f} (model ${candidate or 0.0:.4f} + judge ${judge or 0.0:.4f})"]
    per_thousand = cost.get("per_1000_prompts_usd")
    if per_thousand is not None:
        parts.append(f"${per_thousand:.2f} per 1000 prompts answered once")
    if cost.get("prices_as_of"):
        parts.append(f"prices as of {cost['prices_as_of']}")
    return "\n".join(parts)
