"""The `verify` command: compare both databases completely, optionally repair."""

from __future__ import annotations

import json

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tools.cli import console, domain_errors, open_cutover, parse_tables, pass_context, postgres_option



@click.command()
@click.option("--tables", metavar="T,...", help="Only these tables (comma-separated).")
@click.option("--repair", is_flag=True, help="Make the secondary equal to the primary, then verify again.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@postgres_option
@pass_context
def verify(ctx, tables: str | None, repair: bool, as_json: bool, postgres_url: str | None) -> None:
    """Compare every row of both databases (range hashes, then rows); exit 1 when they differ."""
    from hrp_data.verify.run import verify as run_verify
    from hrp_data.verify.run import verify_and_repair

    names = parse_tables(tables, ctx)
    with domain_errors(), open_cutover(ctx, postgres_url, session="verify") as cutover, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=True, disable=as_json,
    ) as progress:
        task = progress.add_task("verify", total=None)

        def step(table: str, stage: str, done: int, total: int) -> None:
            """stage "hashing": buckets hashed on both sides (each counts twice); "differing ranges": ranges."""
            progress.update(task, description=f"{table}: {stage}", completed=done, total=total)

        if repair:
            first, second = verify_and_repair(cutover, names, progress=step)
        else:
            first, second = run_verify(cutover, names, progress=step), None
    final = second or first
    if as_json:
        payload = first.as_json()
        if second is not None:
            payload = second.as_json() | {"repaired": first.repaired, "before_repair": first.as_json()}
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        _print(first)
        if second is not None:
            click.echo(
                f"repaired: {first.repaired['upserted']} upserted, {first.repaired['deleted']} deleted,"
                f" {first.repaired['failed']} failed; verifying again"
            )
            _print(second)
    if not final.equal:
        raise SystemExit(1)


def _print(result) -> None:
    width = max([16, *(len(name) + 2 for name in result.tables)])
    click.echo(f"{'table':<{width}}{'primary':>10}{'secondary':>11}{'missing':>9}{'extra':>7}{'differ':>8}"
               f"{'refused':>9}{'quarant.':>10}{'pending':>9}{'s':>8}")
    for name, t in result.tables.items():
        click.echo(
            f"{name:<{width}}{t.rows_primary:>10}{t.rows_secondary:>11}{t.missing:>9}{t.extra:>7}"
            f"{t.different:>8}{t.refused:>9}{t.quarantined:>10}{t.pending:>9}{t.seconds:>8.2f}"
        )
    for example in result.examples[:10]:
        click.echo(f"  {example}")
    if any(t.pending for t in result.tables.values()):
        click.echo("pending: rows whose change is still on its way to the secondary (not differences);"
                   " with the app stopped nothing carries them: `hrp-cutover replay` does")
    click.echo("EQUAL" if result.equal else "NOT EQUAL")


COMMANDS = [verify]
