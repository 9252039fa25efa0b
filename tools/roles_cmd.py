"""The `roles` command: the PostgreSQL roles of least privilege (docs/operations.md, least privilege)."""

from __future__ import annotations

import click
import sqlalchemy as sa

from tools.cli import BadSetting, domain_errors, operator_settings, pass_context, postgres_option


@click.command()
@click.option("--sql", "as_sql", is_flag=True, help="Print the SQL (the owner's part, then the migrator's); run nothing.")
@click.option("--migrator", default=None, metavar="NAME", help="The migrator's role (default hrp_migrator).")
@click.option("--app", default=None, metavar="NAME", help="The app's role (default HRP_APP_ROLE, else hrp_app).")
@click.option("--verifier", default=None, metavar="NAME",
              help="The read-only verifier's role (default HRP_VERIFIER_ROLE, else hrp_verifier).")
@click.option("--database", default=None, metavar="NAME", help="With --sql: the database (default: the URL's).")
@click.option("--set-passwords", is_flag=True,
              help="Ask for each role's password (hidden) and store only its SCRAM hash, made by libpq.")
@postgres_option
@pass_context
def roles(ctx, as_sql: bool, migrator, app, verifier, database, set_passwords: bool, postgres_url) -> None:
    """Create the migrator, app and verifier roles and grant them the database and the schema; run it
    as the database owner (a role with CREATEROLE; no superuser needed). The grants on the tables
    follow from `hrp-cutover schema`, run as the migrator."""
    from adapters.catalog import quote
    from hrp_data.schema.roles import DEFAULT_NAMES, APP_READS, OPTIONAL, RoleNames, owner_statements, read_only_statements, table_grants

    settings = operator_settings(ctx, postgres_url)
    names = RoleNames(
        migrator=migrator or DEFAULT_NAMES["migrator"],
        app=app or ctx.settings.app_role or DEFAULT_NAMES["app"],
        verifier=verifier or ctx.settings.verifier_role or DEFAULT_NAMES["verifier"],
    )
    try:
        names = RoleNames(*(_role_name(n) for n in names.logins()))
    except ValueError as error:
        raise BadSetting(str(error)) from None
    if as_sql:
        db = database or _database_of(settings.postgres_url) or "hrp"
        click.echo("-- 1. as the owner of the database (CREATEROLE; superuser not needed): `hrp-cutover roles`")
        for statement in owner_statements(names, db):
            click.echo(f"{statement};")
        for role in names.logins():
            click.echo(f"-- password: psql's \\password {role} (libpq sends only its SCRAM hash), or --set-passwords")
        click.echo("-- optional, each buys something (docs/operations.md):")
        for what, statement in OPTIONAL.items():
            click.echo(f"-- {what}: {statement.format(db=quote(db), migrator=quote(names.migrator))};")
        click.echo("-- 2. as the migrator, after the schema: `hrp-cutover schema` runs these itself")
        for statement in table_grants(names.migrator, names.app, names.verifier):
            click.echo(f"{statement};")
        for statement in read_only_statements(names.app, APP_READS):
            click.echo(f"{statement};")
        return
    passwords = {}
    if set_passwords:
        for role in names.logins():
            passwords[role] = click.prompt(f"password for {role}", hide_input=True, confirmation_prompt=True)
    with domain_errors():
        url = settings.require_postgres()
    _apply(url, names, passwords)


def _apply(url: str, names, passwords: dict[str, str]) -> None:
    from hrp_data.schema.install import engine_for
    from hrp_data.schema.roles import create_roles, set_password

    with domain_errors():
        engine = engine_for(url)
        try:
            with engine.begin() as connection:
                done = create_roles(connection, names)
                for role, password in passwords.items():
                    set_password(connection, role, password)
                    done.append(f"password of {role} set (its SCRAM hash)")
        except sa.exc.ProgrammingError as error:
            from hrp_data.errors import describe_error

            raise click.ClickException(
                f"cannot create the roles: {describe_error(error)}; run `hrp-cutover roles` as the database's"
                " owner with CREATEROLE, or `hrp-cutover roles --sql` for a DBA"
            ) from None
        finally:
            engine.dispose()
    for line in done:
        click.echo(line)
    click.echo(f"next: `hrp-cutover schema` as {names.migrator} (HRP_POSTGRES_DIRECT_URL) with"
               f" HRP_APP_ROLE={names.app} HRP_VERIFIER_ROLE={names.verifier}: it grants them the tables")


def _role_name(name: str) -> str:
    from hrp_data.settings import _ROLE_NAME

    if not _ROLE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a PostgreSQL role name; use letters, digits, _ and $ (at most 63)")
    return name


def _database_of(url: str | None) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).database if url else None


COMMANDS = [roles]
