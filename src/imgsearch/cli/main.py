"""The `imgsearch` command line: run the local stack, ingest images, search, inspect.

Exit codes: 0 success; 1 a request failed or some items failed; 2 bad usage
(unknown option, unreadable file, bad argument); 3 the Search service cannot
be reached or did not answer in time; 4 the service refused the credentials
(no token, an unknown token, or a token without the scope the command needs).
Every error is one line on stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from imgsearch.cli import html as html_page
from imgsearch.cli.evaluate import eval_command
from imgsearch.cli.ingest import (
    IngestOptions,
    IngestReport,
    PathNotFoundError,
    discover,
    ingest,
)
from imgsearch.cli.tables import compact_table, item_cell
from imgsearch.cli.token import token_app
from imgsearch.client import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    DEFAULT_INSERT_TIMEOUT_S,
    Client,
    read_image,
)
from imgsearch.client_security import TLS_CA_ENV, TOKEN_FILE_ENV
from imgsearch.common import errors
from imgsearch.common.query_views import describe_view
from imgsearch.common.settings import ConfigurationError
from imgsearch.filenames import escape_name
from imgsearch.secure_stack import SecureFiles
from imgsearch.stack import LocalStack, StackConfig, StackError, StackUsageError

app = typer.Typer(
    name="imgsearch",
    help="Reverse image search: index images, find similar ones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("eval")(eval_command)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_AUTH = 4

_out = Console(highlight=False, soft_wrap=True, emoji=False)
_err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


@dataclass(frozen=True)
class _Options:
    address: str
    timeout: float
    token_file: Path | None = None
    tls: bool | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one clear line on stderr and exit with `code`."""
    one_line = " ".join(message.split())
    typer.echo(f"imgsearch: error: {one_line}", err=True)
    raise typer.Exit(code)


def _fail_for(exc: errors.ImgsearchError) -> NoReturn:
    if isinstance(exc, errors.UnavailableError | errors.DeadlineExceededError):
        fail(exc.message, EXIT_UNAVAILABLE)
    if isinstance(exc, errors.UnauthenticatedError | errors.PermissionDeniedError):
        fail(exc.message, EXIT_AUTH)
    fail(exc.message, EXIT_FAILED)


# host:port, [IPv6]:port, or a gRPC target with its scheme (dns:///..., unix:...).
_ADDRESS_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]@]+):(\d{1,5})\Z")
_GRPC_TARGET_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:")


def _check_address(address: str) -> None:
    """A usage error (exit 2) unless `address` is host:port or a gRPC target."""
    if address.startswith(_GRPC_TARGET_SCHEMES):
        return
    match = _ADDRESS_RE.match(address)
    if match is None or not 0 < int(match.group(1)) < 65536:
        fail(
            f"bad --address {escape_name(address)!r}: expected host:port of the Search service"
            " (e.g. 127.0.0.1:50051 or [::1]:50051), without a scheme such as http://",
            EXIT_USAGE,
        )


def _client(ctx: typer.Context, insert_timeout: float = DEFAULT_INSERT_TIMEOUT_S) -> Client:
    options: _Options = ctx.obj
    _check_address(options.address)
    try:
        return Client(
            options.address,
            timeout=options.timeout,
            insert_timeout=insert_timeout,
            token_file=options.token_file,
            tls=options.tls,
            tls_ca=options.tls_ca,
            tls_cert=options.tls_cert,
            tls_key=options.tls_key,
            tls_server_name=options.tls_server_name,
        )
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)


def check_output_file(path: Path | None, option: str = "--html") -> None:
    """Fail now (exit 2, one line) when `path` cannot be written, rather than after the work."""
    if path is None:
        return
    shown = escape_name(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        fail(f"cannot write {option} {shown}: it is a folder", EXIT_USAGE)
    if not folder.is_dir():
        fail(f"cannot write {option} {shown}: no folder {escape_name(folder)}", EXIT_USAGE)
    if not os.access(path if path.exists() else folder, os.W_OK):
        fail(f"cannot write {option} {shown}: permission denied", EXIT_USAGE)


def _safe_output() -> None:
    """Never crash on printing: characters the terminal cannot encode are backslash-escaped."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.callback()
def main(
    ctx: typer.Context,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            "-a",
            envvar=ADDRESS_ENV,
            help="host:port of the Search service.",
            show_default=True,
        ),
    ] = DEFAULT_ADDRESS,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", envvar="IMGSEARCH_TIMEOUT", min=0.1, help="Deadline of each call, seconds."
        ),
    ] = 30.0,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar=TOKEN_FILE_ENV,
            help="File holding the bearer token (or put the token itself in IMGSEARCH_TOKEN).",
            show_default=False,
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca",
            envvar=TLS_CA_ENV,
            help="CA bundle (PEM) that signed the server's certificate; turns TLS on.",
            show_default=False,
        ),
    ] = None,
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--no-tls",
            help="Use TLS trusting the system CAs (default: on when --tls-ca is given).",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Client certificate (PEM) for mutual TLS.", hidden=False),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="Key (PEM) of --tls-cert.")
    ] = None,
    tls_server_name: Annotated[
        str | None,
        typer.Option(
            "--tls-server-name",
            help="Name expected in the server certificate (e.g. through kubectl port-forward).",
        ),
    ] = None,
) -> None:
    _safe_output()
    ctx.obj = _Options(
        address=address,
        timeout=timeout,
        token_file=token_file,
        tls=tls,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_server_name=tls_server_name,
    )


app.add_typer(token_app, name="token")


# --- ingest


# What a label cannot hold: C0 controls, DEL, and bytes of the command line
# that are not UTF-8 (kept by Python as lone surrogates).
_NOT_LABEL_TEXT = re.compile("[\x00-\x1f\x7f\udc80-\udcff]")


# Label keys, as Search checks them (Item.labels in search.proto).
_LABEL_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
LABEL_KEY_RULE = "a key is a letter or _, then letters, digits or _ (at most 64)"


def _check_label_key(key: str, option: str, shown: str) -> None:
    if not _LABEL_KEY_RE.match(key):
        fail(f"bad {option} {shown!r}: {LABEL_KEY_RULE}", EXIT_USAGE)


def _parse_labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        shown = escape_name(pair)
        if not sep or not key:
            fail(f"bad --label {shown!r}: expected KEY=VALUE", EXIT_USAGE)
        _check_label_key(key, "--label", shown)
        if _NOT_LABEL_TEXT.search(pair):
            fail(
                f"bad --label {shown!r}: labels are UTF-8 text without control characters",
                EXIT_USAGE,
            )
        labels[key] = value
    return labels


@app.command("ingest")
def ingest_command(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Folders (recursive), files or globs.")],
    id_from: Annotated[
        str,
        typer.Option(
            "--id-from",
            help="Item ids: 'hash' (SHA-256 of the file) or 'path' (path relative to here).",
        ),
    ] = "hash",
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="KEY=VALUE label on every item (repeatable)."),
    ] = None,
    folder_label: Annotated[
        str | None,
        typer.Option(
            "--folder-label", help="Label KEY set to each file's folder name (class folders)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=256, help="Images per Insert request.")
    ] = 32,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=16, help="Insert requests in flight.")
    ] = 4,
    insert_timeout: Annotated[
        float,
        typer.Option(
            "--insert-timeout",
            envvar="IMGSEARCH_INSERT_TIMEOUT",
            min=0.1,
            help="Deadline of each Insert request (one batch, retries included), seconds.",
        ),
    ] = DEFAULT_INSERT_TIMEOUT_S,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Re-insert already indexed images whose stored labels or uri differ, so"
            " this run's --label/--folder-label and uri apply (without it they keep theirs).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Index images: skips non-images, re-runs skip what is already indexed (see --update)."""
    if id_from not in ("hash", "path"):
        fail(f"bad --id-from {id_from!r}: expected 'hash' or 'path'", EXIT_USAGE)
    if folder_label is not None:
        _check_label_key(folder_label, "--folder-label", escape_name(folder_label))

    def warn(message: str) -> None:
        _err.print(f"warning: {message}", markup=False)

    try:
        files = discover(paths, warn=warn)
    except PathNotFoundError as exc:
        fail(str(exc), EXIT_USAGE)
    options = IngestOptions(
        id_from=id_from,  # type: ignore[arg-type]
        labels=_parse_labels(label or []),
        folder_label=folder_label,
        batch_size=batch_size,
        concurrency=concurrency,
        update=update,
    )
    show_progress = not as_json and _err.is_terminal
    with (
        _client(ctx, insert_timeout) as client,
        Progress(
            TextColumn("ingesting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=_err,
            disable=not show_progress,
        ) as bar,
    ):
        task = bar.add_task("ingest", total=len(files), rate="")
        inserted_so_far = 0
        started = bar.get_time()

        def advance(done: int, inserted: int) -> None:
            nonlocal inserted_so_far
            inserted_so_far += inserted
            elapsed = max(bar.get_time() - started, 1e-6)
            bar.update(task, advance=done, rate=f"{inserted_so_far / elapsed:.1f} images/s")

        report = IngestReport()
        try:
            ingest(client, files, options, warn=warn, progress=advance, report=report)
        except errors.ImgsearchError as exc:
            # The run stopped (the service went away...): say what it did first.
            bar.stop()
            _print_ingest_report(report, as_json, stopped=exc.message)
            _fail_for(exc)

    _print_ingest_report(report, as_json)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def _print_ingest_report(report: IngestReport, as_json: bool, stopped: str = "") -> None:
    """The summary of an ingest run (JSON or one line, then the failures and a hint)."""
    if as_json:
        _print_json({**report.to_dict(), **({"stopped": stopped} if stopped else {})})
        return
    updated = f", updated {report.updated}" if report.updated else ""
    _out.print(
        ("stopped early: " if stopped else "")
        + f"inserted {report.inserted}{updated}, skipped {report.skipped} already indexed"
        f" ({report.duplicates} duplicates in this run), {len(report.not_images)} not images,"
        f" {len(report.not_regular)} not regular files,"
        f" failed {len(report.failed)}; {report.elapsed_s:.1f} s,"
        f" {report.images_per_s:.1f} images/s",
        markup=False,
    )
    for failure in report.failed:
        _out.print(f"  failed: {failure.path}: {failure.reason}", markup=False)
    if report.stale:
        _err.print(
            f"note: {report.stale} skipped items keep their stored labels and uri, which differ"
            " from this run's; add --update to apply the new ones",
            markup=False,
        )


# --- search


@app.command("search")
def search_command(
    ctx: typer.Context,
    image: Annotated[
        Path | None, typer.Argument(help="Query image file (or use --id).", show_default=False)
    ] = None,
    by_id: Annotated[
        str | None, typer.Option("--id", help="Search with a stored item instead of an image.")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Number of hits.")] = 10,
    filter_expr: Annotated[
        str,
        typer.Option(
            "--filter", help='Label filter, e.g. \'category == "shoe" and color in ["red"]\'.'
        ),
    ] = "",
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Leave out hits scoring below this.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML page of the hits here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find the stored images most similar to IMAGE (or to a stored item with --id)."""
    if (image is None) == (by_id is None):
        fail("give a query IMAGE or --id ID (exactly one)", EXIT_USAGE)
    query_bytes: bytes | None = None
    if image is not None:
        try:
            query_bytes = read_image(image)
        except OSError as exc:
            fail(f"cannot read {escape_name(image)}: {exc.strerror or exc}", EXIT_USAGE)
    check_output_file(html_file)
    with _client(ctx) as client:
        try:
            if query_bytes is not None:
                result = client.search(query_bytes, k=k, filter=filter_expr, min_score=min_score)
            else:
                result = client.search(id=by_id, k=k, filter=filter_expr, min_score=min_score)
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    query_name = escape_name(image) if image is not None else f"id {by_id}"
    if html_file is not None:
        query_src = html_page.data_uri(query_bytes) if query_bytes is not None else None
        if query_src is None and by_id is not None and result.hits:
            query_src = html_page.hit_image_src(result.hits[0].uri)
        page = html_page.render_page(
            f"imgsearch: {query_name}",
            [html_page.ResultSection(title=query_name, query_src=query_src, hits=result.hits)],
        )
        try:
            html_file.write_text(page, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {escape_name(html_file)}: {exc.strerror or exc}", EXIT_USAGE)
    if as_json:
        _print_json(
            {
                "query": query_name,
                "cached": result.cached,
                "hits": [
                    {"rank": rank, **hit.to_dict()} for rank, hit in enumerate(result.hits, start=1)
                ],
                "html": escape_name(html_file) if html_file else None,
            }
        )
        return
    title = f"{len(result.hits)} hits for {query_name}" + (" (cached)" * result.cached)
    # Ids (content hashes) are copied into other commands: each whole on its line, the uri
    # (and which view of the query found the hit) below it, so 80 columns are enough.
    table = compact_table(title, "id (uri below)")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    # Hits found through a view of the query (a picture pasted into it, the query
    # straightened, uncaptioned) say so; nothing is added when every hit is the whole image's.
    views = any(hit.matched_view for hit in result.hits)
    for rank, hit in enumerate(result.hits, start=1):
        cell = item_cell(hit.id, hit.uri)
        if views:
            cell.append("\n  ")
            cell.append(describe_view(hit.matched_view) or "as your whole image", "dim")
        table.add_row(cell, str(rank), f"{hit.score:.4f}")
    _out.print(table)
    if html_file is not None:
        _out.print(f"wrote {escape_name(html_file)}", markup=False)


# --- get, delete, stats, health


@app.command("get")
def get_command(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Item ids.")],
    vectors: Annotated[bool, typer.Option("--vectors", help="Include embedding vectors.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show stored items; exits 1 when some ids are not stored."""
    with _client(ctx) as client:
        try:
            result = client.get(ids, include_vectors=vectors)
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    if as_json:
        _print_json(
            {
                "items": [item.to_dict() for item in result.items],
                "missing_ids": result.missing_ids,
            }
        )
    else:
        for item in result.items:
            labels = ", ".join(f"{key}={value}" for key, value in sorted(item.labels.items()))
            _out.print(
                f"{item.id}\n  uri: {item.uri}\n  labels: {labels or '-'}\n"
                f"  sha256: {item.content_sha256}\n  model: {item.model}",
                markup=False,
            )
            if item.vector is not None:
                _out.print(f"  vector: {json.dumps(item.vector)}", markup=False)
    if result.missing_ids:
        fail(f"not stored: {', '.join(result.missing_ids)}", EXIT_FAILED)


@app.command("delete")
def delete_command(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Item ids.")],
    as_json: JsonOption = False,
) -> None:
    """Delete stored items (ids that are not stored are ignored)."""
    with _client(ctx) as client:
        try:
            deleted = client.delete(ids)
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    if as_json:
        _print_json({"deleted": deleted, "requested": len(ids)})
    else:
        _out.print(f"deleted {deleted} of {len(ids)}", markup=False)


@app.command("stats")
def stats_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Describe the collection, its model and the cache."""
    with _client(ctx) as client:
        try:
            stats = client.stats()
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    if as_json:
        _print_json(stats.to_dict())
        return
    table = Table(show_header=False)
    for key, value in stats.to_dict().items():
        table.add_row(key, Text(str(value)))
    _out.print(table)


@app.command("health")
def health_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Ask the Search service's grpc.health.v1 whether it is SERVING (exit 1 when not)."""
    with _client(ctx) as client:
        try:
            status = client.health()
        except errors.ImgsearchError as exc:
            _fail_for(exc)
    if as_json:
        _print_json({"address": client.address, "status": status})
    else:
        _out.print(f"{client.address}: {status}", markup=False)
    if status != "SERVING":
        raise typer.Exit(EXIT_FAILED)


# --- up


def _print_secure(secure: SecureFiles, search: str) -> None:
    """Where `imgsearch up --secure` put its CA and tokens, and a command that uses them."""
    tokens = ", ".join(f"{name}: {path}" for name, path in secure.tokens.items())
    typer.echo(f"tls ca {secure.ca}")
    typer.echo(f"tokens {tokens}")
    _err.print(
        f"imgsearch up: TLS and tokens are on. Try: imgsearch --address {search}"
        f" --tls-ca {secure.ca} --token-file {secure.tokens['search']} stats",
        markup=False,
    )


@app.command("up")
def up_command(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where data and logs live.")] = Path(
        ".imgsearch"
    ),
    milvus: Annotated[
        str,
        typer.Option(
            "--milvus",
            help="'standalone' (the Milvus 2.3 server, fast at any size) or 'lite' (Milvus Lite:"
            " slow past a few thousand images).",
        ),
    ] = "standalone",
    milvus_uri: Annotated[
        str | None, typer.Option("--milvus-uri", help="Use this Milvus instead of starting one.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Use this Redis instead of starting one.")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface the gRPC services bind.")
    ] = "127.0.0.1",
    search_port: Annotated[
        int, typer.Option("--search-port", min=0, max=65535, help="0 picks a free port.")
    ] = 0,
    embedder_port: Annotated[
        int, typer.Option("--embedder-port", min=0, max=65535, help="0 picks a free port.")
    ] = 0,
    web_port: Annotated[
        int,
        typer.Option(
            "--web-port", min=0, max=65535, help="Port of the web page and HTTP API; 0: free."
        ),
    ] = 0,
    startup_timeout: Annotated[
        float, typer.Option("--startup-timeout", min=1, help="Seconds to wait for readiness.")
    ] = 180.0,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help=(
                "TLS and tokens on every hop: a private CA, certificates and one token per"
                " scope under DATA_DIR/secure (docs/security.md)."
            ),
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run Milvus, Redis, the Embedder, Search and the web page; Ctrl-C stops them all."""
    if milvus not in ("lite", "standalone"):
        fail(f"bad --milvus {milvus!r}: expected 'lite' or 'standalone'", EXIT_USAGE)
    stack = LocalStack(
        StackConfig(
            data_dir=data_dir,
            host=host,
            search_port=search_port,
            embedder_port=embedder_port,
            web_port=web_port,
            milvus=milvus,  # type: ignore[arg-type]
            milvus_uri=milvus_uri,
            redis_url=redis_url,
            startup_timeout_s=startup_timeout,
            secure=secure,
        ),
        announce=lambda message: _err.print(f"imgsearch up: {message}", markup=False),
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stack.stop_requested.set()

    # Children run in their own process groups, so Ctrl-C reaches only us and
    # we stop them in order.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        try:
            addresses = stack.start()
        except StackUsageError as exc:
            fail(str(exc), EXIT_USAGE)
        except StackError as exc:
            if stack.stop_requested.is_set():
                _err.print("imgsearch up: stopped during start-up", markup=False)
                return
            _err.print(f"imgsearch up: {exc}", markup=False)
            raise typer.Exit(EXIT_FAILED) from None
        search_host, _, search_port_text = addresses.search.rpartition(":")
        embedder_host, _, embedder_port_text = addresses.embedder.rpartition(":")
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "search": addresses.search,
                        "embedder": addresses.embedder,
                        "web": addresses.web,
                        "milvus_uri": addresses.milvus_uri,
                        "redis_url": addresses.redis_url,
                        "logs": str(addresses.log_dir),
                        "pid": os.getpid(),
                        **({"secure": addresses.secure.summary()} if addresses.secure else {}),
                    }
                )
            )
        else:
            typer.echo(f"search listening on {search_host}:{search_port_text}")
            typer.echo(f"embedder listening on {embedder_host}:{embedder_port_text}")
            typer.echo(f"web listening on {addresses.web}")
            try_it = f" Try: imgsearch --address {addresses.search} stats"
            _err.print(
                f"imgsearch up: ready; logs in {addresses.log_dir}; Ctrl-C stops the stack."
                + ("" if addresses.secure else try_it),
                markup=False,
            )
            if addresses.secure is not None:
                _print_secure(addresses.secure, addresses.search)
                _err.print(
                    f"imgsearch up: the web page {addresses.web}/ has a certificate of that CA"
                    " (import it in the browser, or accept the warning); paste a token from"
                    " the files above under Token.",
                    markup=False,
                )
        sys.stdout.flush()
        dead = stack.wait()
        if dead is not None:
            code = dead.exit_code()
            _err.print(
                f"imgsearch up: {stack.describe_exit(dead, code if code is not None else -1)}",
                markup=False,
            )
            _err.print("imgsearch up: stopping the other services", markup=False)
            exit_code = EXIT_FAILED
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if exit_code:
        raise typer.Exit(exit_code)


# Commands in their own modules register themselves on `app` when imported.
from imgsearch.cli import browse, duplicates  # noqa: E402, F401
