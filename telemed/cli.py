"""The `telemed` command: serve, seed demo records, manage users, verify the audit chain."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from telemed import audit, auth, demo
from telemed.app import create_app
from telemed.audit import AuditEvent
from telemed.permissions import ROLES
from telemed.settings import Settings, SettingsError, load_settings
from telemed.store import Conflict, NotFound, accounts
from telemed.store.database import connect

STEMI_CRITERIA = {"elevation": "ST elevation",
                  "posterior": "posterior equivalent, ST depression with upright T"}


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    return load_settings(flags={"data_dir": args.data, **flags}, config_file=args.config)


def _in_transaction(settings: Settings, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    conn = connect(settings.database_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result
    finally:
        conn.close()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, port=args.port, redis_url=args.redis)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=5,
                print=lambda _: print(f"telemed listening on http://{settings.host}:{settings.port}"
                                      f" (data in {settings.data_dir.resolve()})", flush=True))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    print(json.dumps(_in_transaction(_settings(args), demo.seed), indent=2))
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    password = args.password or getpass.getpass(f"password for {args.username}: ")
    if len(password) < 10:
        print("error: the password must be at least 10 characters", file=sys.stderr)
        return 2

    def create(conn: sqlite3.Connection) -> dict:
        institution = next((i for i in accounts.list_institutions(conn)
                            if i["name"] == args.institution), None)
        if institution is None:
            institution = accounts.create_institution(conn, args.institution, args.kind)
        staff = accounts.create_staff(conn, args.username, auth.hash_password(password),
                                      args.full_name or args.username, args.role,
                                      institution["id"], args.specialty)
        audit.append(conn, AuditEvent(actor="system", action="staff.create",
                                      object=f"staff:{staff['id']}", client="cli"))
        return staff

    try:
        print(json.dumps(_in_transaction(_settings(args), create), indent=2))
    except (Conflict, NotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.database_path.exists():
        print(f"error: no database at {settings.database_path}", file=sys.stderr)
        return 2
    conn = sqlite3.connect(f"file:{settings.database_path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        result = audit.verify(conn)
        if args.head:
            seq, _, digest = args.head.partition(":")
            if not seq.isdigit() or len(digest) != 64:
                print("error: --head is SEQ:HASH as printed by an earlier verify", file=sys.stderr)
                return 2
            result = audit.check_head(conn, result, int(seq), digest)
    finally:
        conn.close()
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.ok else 1


def cmd_ecg_send(args: argparse.Namespace) -> int:
    """Replay a recording as an ambulance monitor would, through link drops."""
    import aiohttp
    from diagnosis.ecg.formats import EcgFormatError
    from diagnosis.ecg.sender import Sender, create_stream, load_recording

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        recording = load_recording(args.path)
    except (OSError, ValueError) as exc:
        where = "" if isinstance(exc, EcgFormatError) else f"{args.path}: "
        print(f"error: cannot read {where}{exc}", file=sys.stderr)
        return 2

    async def send() -> dict:
        async with aiohttp.ClientSession() as session:
            stream_id = args.stream or await create_stream(session, args.url, args.token,
                                                           args.patient, args.consult)
            report = await Sender(args.url, args.token, recording, stream_id,
                                  speed=args.speed).run(session)
            return vars(report)

    if not args.stream and not args.patient:
        print("error: name the patient (--patient) or an existing stream (--stream)", file=sys.stderr)
        return 2
    try:
        print(json.dumps(asyncio.run(send()), indent=2))
    except (RuntimeError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_ecg_analyze(args: argparse.Namespace) -> int:
    """Run the streaming analysis over a recording file and print what it found."""
    from diagnosis.ecg.analysis import analyze
    from diagnosis.ecg.formats import EcgFormatError, read_record

    try:
        record = read_record(args.path)
    except (OSError, ValueError) as exc:
        where = "" if isinstance(exc, EcgFormatError) else f"{args.path}: "
        print(f"error: cannot read {where}{exc}", file=sys.stderr)
        return 2
    report = analyze(record).as_json()
    if args.json:
        print(json.dumps(report))
        return 0
    labels = [beat["label"] for beat in report["beats"]]
    print(f"{record.n_samples} samples at {report['fs']:g} Hz, leads {', '.join(report['leads'])}")
    print(f"{len(labels)} beats ({labels.count('V')} ventricular), heart rate "
          f"{report['heart_rate']['mean_bpm']} bpm")
    for episode in report["rhythms"]:
        print(f"  {episode['label']:9s} {episode['start'] / report['fs']:9.2f} s - "
              f"{episode['end'] / report['fs']:9.2f} s")
    for alert in report["alerts"]:
        print(f"ALERT {alert['kind']} at {alert['sample'] / report['fs']:.2f} s"
              + (f" ({', '.join(alert['leads'])})" if alert["leads"] else "")
              + (f": {STEMI_CRITERIA[alert['criterion']]}" if alert["criterion"] else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telemed", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=None, help="data folder (default ./var)")
    common.add_argument("--config", type=Path, default=None, help="optional TOML settings file")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--redis", default=None, help="redis:// URL; the bus becomes Redis")
    serve.set_defaults(run=cmd_serve)

    demo_cmd = commands.add_parser("demo", parents=[common], help="seed demo institutions and users")
    demo_cmd.set_defaults(run=cmd_demo)

    user = commands.add_parser("user", help="manage staff accounts").add_subparsers(
        dest="user_command", required=True)
    create = user.add_parser("create", parents=[common], help="create a staff account")
    create.add_argument("username")
    create.add_argument("--role", choices=ROLES, default="admin")
    create.add_argument("--institution", required=True, help="institution name (created if new)")
    create.add_argument("--kind", default="hospital",
                        choices=("hospital", "township", "village", "ambulance"),
                        help="kind of a newly created institution")
    create.add_argument("--full-name", default=None)
    create.add_argument("--specialty", default=None)
    create.add_argument("--password", default=None, help="prompted for when omitted")
    create.set_defaults(run=cmd_user_create)

    ecg = commands.add_parser("ecg", help="ECG tools").add_subparsers(dest="ecg_command",
                                                                      required=True)
    send = ecg.add_parser("send", help="stream a recording to a server in real time")
    send.add_argument("path", type=Path,
                      help="a WFDB record (.hea), DICOM ECG (.dcm) or HL7 aECG (.xml) file")
    send.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    send.add_argument("--token", required=True, help="access token (POST /api/login)")
    send.add_argument("--patient", help="patient ID; a new stream is created for it")
    send.add_argument("--consult", help="attach the new stream to this consult")
    send.add_argument("--stream", help="continue an existing stream instead")
    send.add_argument("--speed", type=float, default=1.0, help="1.0 is real time")
    send.set_defaults(run=cmd_ecg_send)
    analyze_cmd = ecg.add_parser("analyze", help="beats, rhythm, ST, quality and alerts of a file")
    analyze_cmd.add_argument("path", type=Path,
                             help="a WFDB record (.hea), DICOM ECG (.dcm) or HL7 aECG (.xml) file")
    analyze_cmd.add_argument("--json", action="store_true", help="print the full report as JSON")
    analyze_cmd.set_defaults(run=cmd_ecg_analyze)

    audit_cmd = commands.add_parser("audit", help="audit trail tools").add_subparsers(
        dest="audit_command", required=True)
    verify = audit_cmd.add_parser("verify", parents=[common], help="check the audit hash chain")
    verify.add_argument("--head", help="SEQ:HASH from an earlier verify, kept elsewhere; "
                                       "detects entries cut off the end")
    verify.set_defaults(run=cmd_audit_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
