"""``modomo keys``: API keys, stored hashed in the database."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from modomo.cli.app import _ensure_database, _fail, keys_app
from modomo.config import get_settings


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key.")],
    role: Annotated[str, typer.Option(help="user or admin.")] = "user",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key.")] = False,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from modomo.api.keys import create_key
    from modomo.console import console

    _ensure_database(get_settings())
    try:
        record, key = create_key(name, role)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if quiet:
        sys.stdout.write(key + "\n")
        return
    console.print(f"key [bold]{record['name']}[/] ({record['role']}), id {record['id']}:")
    sys.stdout.write(key + "\n")
    console.print("[dim]store it now: it is not shown again[/]")


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List API keys (names, prefixes, roles; never the keys)."""
    from modomo.api.keys import list_keys
    from modomo.console import console

    table = Table("id", "name", "prefix", "role", "created", "last used", "revoked")
    for key in list_keys(include_revoked=include_revoked):
        table.add_row(
            key["id"],
            key["name"],
            key["prefix"],
            key["role"],
            key["created_at"][:19],
            (key["last_used_at"] or "-")[:19],
            (key["revoked_at"] or "-")[:19],
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(id_or_prefix: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke an API key: it stops working at once."""
    from modomo.api.keys import KeyNotFound, revoke_key
    from modomo.console import console

    try:
        record = revoke_key(id_or_prefix)
    except KeyNotFound as exc:
        raise _fail(str(exc), 1) from None
    console.print(f"revoked key {record['name']} ({record['prefix']}…)")
