"""`imgsearch token`: make bearer tokens and the principals-file lines the services check.

    imgsearch token create ingest --scope write --scope search \\
        --token-file ingest.token --principals-file search-principals.txt

writes a new random token to `ingest.token` (mode 0600, for the client) and
appends `ingest search,write sha256:...` to the principals file (mode 0600,
for the service: `SEARCH_AUTH_FILE`). The token itself is never printed.
`imgsearch token hash NAME --scope ... --token-file F` prints the line for an
existing token. See docs/security.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgsearch.common.auth import SCOPES, new_token, principal_line, token_hash
from imgsearch.common.pki import write_private
from imgsearch.common.secret_files import SecretFileError, read_secret

token_app = typer.Typer(
    help="Create bearer tokens and their principals-file lines (token hashes).",
    no_args_is_help=True,
)

ScopeOption = Annotated[
    list[str],
    typer.Option(
        "--scope",
        "-s",
        help=f"Scope granted (repeatable): {', '.join(sorted(SCOPES))}.",
    ),
]


def _line(name: str, scopes: list[str], credential: str) -> str:
    try:
        return principal_line(name, scopes, credential)
    except SecretFileError as exc:
        typer.echo(f"imgsearch: error: {exc}".replace("principal line 1: ", ""), err=True)
        raise typer.Exit(2) from None


@token_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="Principal name, shown in logs (not secret).")],
    scope: ScopeOption,
    token_file: Annotated[
        Path, typer.Option("--token-file", help="Write the new token here (mode 0600).")
    ],
    principals_file: Annotated[
        Path | None,
        typer.Option(
            "--principals-file",
            help="Append the principal's line here (created with mode 0600); else print it.",
        ),
    ] = None,
) -> None:
    """Make a new random token for NAME with the given scopes."""
    if token_file.exists():
        typer.echo(f"imgsearch: error: {token_file} exists; not overwriting a token", err=True)
        raise typer.Exit(2)
    token = new_token()
    line = _line(name, scope, token_hash(token))
    write_private(token_file, token + "\n")
    if principals_file is None:
        typer.echo(line)
        return
    existing = principals_file.read_text() if principals_file.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    write_private(principals_file, existing + line + "\n")
    typer.echo(f"token for {name!r} in {token_file}; its hash appended to {principals_file}")


@token_app.command("hash")
def hash_command(
    name: Annotated[str, typer.Argument(help="Principal name, shown in logs (not secret).")],
    scope: ScopeOption,
    token_file: Annotated[Path, typer.Option("--token-file", help="File holding the token.")],
) -> None:
    """Print the principals-file line of an existing token (its hash, never the token)."""
    try:
        token = read_secret(token_file, "token file")
    except SecretFileError as exc:
        typer.echo(f"imgsearch: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(_line(name, scope, token_hash(token)))
