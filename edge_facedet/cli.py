"""The `edge-facedet` command line: argument parsing, logging set-up and exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage. Subcommands keep
their heavy imports (OpenVINO, OpenCV) inside, so `check-config` answers quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet import __version__
from edge_facedet.exiting import exit_now
from edge_facedet.home import exit_on_missing_home
from edge_facedet.inference.model import Precision, precision_names
from edge_facedet.malloc import tune_malloc
from edge_facedet.preflight import start_problem, warn_debug_variables
from edge_facedet.redact import RedactingFormatter, url_secrets
from edge_facedet.telemetry import disable_openvino_telemetry
from edge_facedet.tools.arguments import (
    MAX_BATCH_SIZE,
    MAX_EVERY_NTH,
    MAX_FACE_PX,
    UsageParser,
    add_pixel_cap,
    device_name,
    float_in,
    int_in,
    pixel_cap,
)

if TYPE_CHECKING:
    from argparse import _SubParsersAction
    from collections.abc import Sequence

    from edge_facedet.config import ServiceConfig
    from edge_facedet.config.shard import Shard

    _Subparsers = _SubParsersAction[UsageParser]

log = logging.getLogger("edge_facedet")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PRECISION_CHOICES = precision_names()


def setup_logging(level: str, *, secrets: Sequence[str] = ()) -> None:
    """Root logging to stderr through the redacting formatter, scrubbing `secrets`."""
    # Under systemd the journal stamps every line itself.
    under_journal = "JOURNAL_STREAM" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, secrets=secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiomqtt/paho log every reconnect attempt at INFO; the MQTT output reports them itself.
    logging.getLogger("aiomqtt").setLevel(max(logging.WARNING, root.level))


def secret_values(config: ServiceConfig) -> list[str]:
    """Every secret the configuration resolves to, so logs can scrub them.

    Short ones are redacted only in URLs (see `edge_facedet.redact`), long ones everywhere.
    """
    from edge_facedet.config.loader import secret_sources

    values = [source.reveal() for _, source in secret_sources(config)]
    for camera in config.cameras:
        for url in (camera.url, camera.detect_url):
            if url:
                values.extend(url_secrets(url))
    return values


def _model_xml(args: argparse.Namespace) -> Path:
    from edge_facedet.tools.assets import default_model_root, model_xml_path

    if args.model is not None:
        return Path(args.model)
    return model_xml_path(Path(args.models_dir or default_model_root()), args.precision)


def _installed_model_xml(args: argparse.Namespace) -> Path | None:
    """The selected model's .xml, or None after saying it is not installed."""
    xml = _model_xml(args)
    if xml.is_file():
        return xml
    print(f"edge-facedet: model {xml} not found; run `edge-facedet model fetch`", file=sys.stderr)
    return None


def _add_model_selection(parser: argparse.ArgumentParser, *, device: bool = True) -> None:
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=Precision.FP16_INT8.value)
    parser.add_argument("--model", help="explicit model .xml (overrides --precision)")
    parser.add_argument("--models-dir", help="models root (default: $EDGE_FACEDET_MODELS)")
    if device:
        parser.add_argument(
            "--device", type=device_name, default="AUTO", help="OpenVINO device (default AUTO)"
        )
        parser.add_argument(
            "--batch-size",
            type=int_in(1, MAX_BATCH_SIZE),
            default=1,
            help=f"images per inference request, 1..{MAX_BATCH_SIZE} (default 1)",
        )


def _cmd_run(args: argparse.Namespace) -> int:
    # First, before OpenCV, OpenVINO or the service start a thread (malloc.py).
    tune_malloc(environ=os.environ)
    from edge_facedet.config import ConfigError, load_config, resolve_shard
    from edge_facedet.outputs.snapshots.store import SnapshotDirError
    from edge_facedet.service import ModelLoadError, Service

    try:
        config = load_config(Path(args.config))
        secrets = secret_values(config)
        # Before anything starts: `index: auto` on a host without an ordinal is exit 2.
        shard = resolve_shard(config.shard, environ=os.environ)
    except ConfigError as exc:
        print(f"edge-facedet: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level, secrets=secrets)
    warn_debug_variables(os.environ)
    problem = start_problem(config)  # a setting that validates but cannot work here: exit 2
    if problem is not None:
        print(f"edge-facedet: invalid configuration: {args.config}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code = asyncio.run(Service(config=config, shard=shard, config_path=Path(args.config)).run())
    except (ModelLoadError, SnapshotDirError) as exc:
        log.error("invalid configuration: %s: %s", args.config, exc)  # noqa: TRY400 - no trace
        code = EXIT_USAGE
    except OSError as exc:
        # The metrics port taken, a file vanished: one line, no traceback.
        log.error("edge-facedet cannot run: %s", exc)  # noqa: TRY400 - the cause is the message
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = EXIT_OK
    except Exception:
        # Through the logger, so the redacting formatter sees the traceback too.
        log.exception("edge-facedet failed")
        code = EXIT_FAILURE
    # Everything is published and closed by now (exiting.py: why not a normal exit).
    return exit_now(code)


def _cmd_check_config(args: argparse.Namespace) -> int:
    credentials = None if args.credentials_dir is None else Path(args.credentials_dir)
    if credentials is not None and not credentials.is_dir():
        print(f"edge-facedet: --credentials-dir {credentials}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    from edge_facedet.checkconfig import check_config

    return check_config(
        Path(args.config),
        out=sys.stdout,
        err=sys.stderr,
        credentials_dir=credentials,
        shard=args.shard,
        against=None if args.against is None else Path(args.against),
    )


def _cmd_model_fetch(args: argparse.Namespace) -> int:
    from edge_facedet.tools.assets import AssetError, default_model_root, fetch_model

    dest = Path(args.dest) if args.dest else default_model_root()
    try:
        xml = fetch_model(
            precision=args.precision,
            dest=dest,
            mirror=Path(args.mirror) if args.mirror else None,
            progress=lambda line: print(line, file=sys.stderr),
        )
    except AssetError as exc:
        print(f"edge-facedet: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(xml)
    return EXIT_OK


def _cmd_media_fetch(args: argparse.Namespace) -> int:
    from edge_facedet.tools.assets import AssetError, fetch_demo_media

    try:
        paths = fetch_demo_media(
            dest=Path(args.dest), mirror=Path(args.mirror) if args.mirror else None
        )
    except AssetError as exc:
        print(f"edge-facedet: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for path in paths:
        print(path)
    return EXIT_OK


def _cmd_model_info(args: argparse.Namespace) -> int:
    import json

    from edge_facedet.inference.detector import OpenVinoDetector, describe_devices, describe_model

    xml = _installed_model_xml(args)
    if xml is None:
        return EXIT_USAGE
    info = describe_model(xml)
    info["devices"] = describe_devices()
    try:
        detector = OpenVinoDetector(model_xml=xml, device=args.device, batch_size=args.batch_size)
    except (RuntimeError, ValueError, OSError) as exc:
        # A device OpenVINO does not have here (GPU on a host without one): usage, one line.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"edge-facedet: --device {args.device}: cannot load {xml}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    info["compiled"] = {
        "requested_device": detector.info.requested_device,
        "execution_devices": list(detector.info.execution_devices),
        "performance_hint": detector.info.performance_hint,
        "infer_requests": detector.info.infer_requests,
        "compile_seconds": round(detector.info.compile_seconds, 3),
    }
    print(json.dumps(info, indent=2))
    return EXIT_OK


def _cmd_detect(args: argparse.Namespace) -> int:
    max_pixels = pixel_cap(args.max_megapixels)
    from edge_facedet.tools.detect import run_detect

    xml = _installed_model_xml(args)
    if xml is None:
        return EXIT_USAGE
    return run_detect(
        paths=[Path(p) for p in args.paths],
        model_xml=xml,
        device=args.device,
        batch_size=args.batch_size,
        confidence_threshold=args.threshold,
        min_face_px=args.min_face_px,
        annotate_dir=Path(args.annotate) if args.annotate else None,
        every_nth=args.every_nth,
        max_pixels=max_pixels,
        out=sys.stdout,
        err=sys.stderr,
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    max_pixels = pixel_cap(args.max_megapixels)
    from edge_facedet.tools.evaluation import run_eval

    xml = _installed_model_xml(args)
    if xml is None:
        return EXIT_USAGE
    return run_eval(
        images_dir=Path(args.images),
        gt_file=Path(args.gt),
        model_xml=xml,
        device=args.device,
        batch_size=args.batch_size,
        inference_precision=args.inference_precision,
        max_pixels=max_pixels,
        out=sys.stdout,
        err=sys.stderr,
        show_progress=not args.no_progress,
    )


def _cmd_bench(argv: Sequence[str]) -> int:
    # The suite lives in the checkout's benchmarks/, not in the installed package; imported
    # by name so the package's type check does not reach into it.
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "benchmarks" / "run.py").is_file():
        print("edge-facedet: bench runs from a source checkout (benchmarks/)", file=sys.stderr)
        return EXIT_USAGE
    sys.path.insert(0, str(checkout))
    code: int = importlib.import_module("benchmarks.run").main(argv)
    return code


def _add_run_parser(commands: _Subparsers) -> None:
    run = commands.add_parser("run", help="run the service")
    run.add_argument("--config", "-c", required=True, help="YAML configuration file")
    run.add_argument(
        "--log-level",
        default=os.environ.get("EDGE_FACEDET_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    run.set_defaults(handler=_cmd_run)


def _add_check_config_parser(commands: _Subparsers) -> None:
    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config", help="YAML configuration file")
    check.add_argument(
        "--credentials-dir",
        metavar="DIR",
        help="where `credential:` secrets are read (default: $CREDENTIALS_DIRECTORY, set only "
        "inside the unit); the folder the unit loads, e.g. /etc/edge-facedet/credentials, "
        "where the credential edge-facedet_F is the file F",
    )
    check.add_argument(
        "--shard",
        type=shard_spec,
        metavar="I/N",
        help="list the cameras shard I of N runs and every shard's cost (default: the whole "
        "assignment table when the file or $EDGE_FACEDET_SHARD shards)",
    )
    check.add_argument(
        "--against",
        metavar="RUNNING_FILE",
        help="also print what reloading the service running RUNNING_FILE with FILE would "
        "change: cameras added, removed or changed (with the fields), MQTT, and what applies "
        "only at the next start",
    )
    check.set_defaults(handler=_cmd_check_config)


def shard_spec(text: str) -> Shard:
    """`--shard I/N` (a number, not auto: check-config runs off the pods)."""
    from edge_facedet.config.shard import Shard, parse_shard_spec

    try:
        index, count = parse_shard_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not isinstance(index, int):
        raise argparse.ArgumentTypeError("give the index as a number: I/N")
    return Shard(index=index, count=count)


def _add_model_parser(commands: _Subparsers) -> None:
    model = commands.add_parser("model", help="model assets").add_subparsers(
        dest="model_command", required=True, metavar="ACTION"
    )
    fetch = model.add_parser("fetch", help="download (or copy from a mirror) and verify")
    fetch.add_argument("--precision", choices=PRECISION_CHOICES, default=Precision.FP16_INT8.value)
    fetch.add_argument("--mirror", help="local folder laid out like Open Model Zoo's models")
    fetch.add_argument("--dest", help="models root (default: $EDGE_FACEDET_MODELS)")
    fetch.set_defaults(handler=_cmd_model_fetch)
    info = model.add_parser("info", help="inputs, outputs, precision and devices")
    _add_model_selection(info)
    info.set_defaults(handler=_cmd_model_info)


def _add_media_parser(commands: _Subparsers) -> None:
    media = commands.add_parser("media", help="demo footage").add_subparsers(
        dest="media_command", required=True, metavar="ACTION"
    )
    media_fetch = media.add_parser("fetch", help="download (or copy) the demo clips")
    media_fetch.add_argument("--mirror", help="local folder laid out like shared/media")
    media_fetch.add_argument("--dest", default=".media", help="destination folder")
    media_fetch.set_defaults(handler=_cmd_media_fetch)


def _add_detect_parser(commands: _Subparsers) -> None:
    detect = commands.add_parser(
        "detect",
        help="detect faces in images, folders and videos",
        description="Faces in images, folders and videos, one JSON line per frame. Exit status: "
        "0 every file processed; 1 some file failed (each named on stderr, the others still "
        "processed); 2 usage (bad argument, no media found, an --annotate folder that cannot "
        "be created or would overwrite an input, a device that cannot load the model).",
    )
    detect.add_argument("paths", nargs="+", metavar="PATH")
    _add_model_selection(detect)
    detect.add_argument(
        "--threshold", type=float_in(0.0, 1.0), default=0.5, help="confidence threshold, 0..1"
    )
    detect.add_argument(
        "--min-face-px", type=int_in(0, MAX_FACE_PX), default=0, help="smallest face height"
    )
    detect.add_argument(
        "--annotate",
        metavar="OUT",
        help="write annotated copies to this folder (refused if a copy would overwrite an input)",
    )
    detect.add_argument(
        "--every-nth",
        type=int_in(1, MAX_EVERY_NTH),
        default=1,
        help="videos: every Nth frame (default 1)",
    )
    add_pixel_cap(detect)
    detect.set_defaults(handler=_cmd_detect)


def _add_eval_parser(commands: _Subparsers) -> None:
    evaluate = commands.add_parser("eval", help="WIDER FACE average precision")
    evaluate.add_argument("--images", required=True, help="folder of WIDER images")
    evaluate.add_argument("--gt", required=True, help="wider_face_val_bbx_gt.txt")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.add_argument(
        "--inference-precision",
        choices=("f32", "bf16"),
        help="CPU inference precision (default: the plugin's, bf16 where the CPU has it)",
    )
    _add_model_selection(evaluate)
    add_pixel_cap(evaluate)
    evaluate.set_defaults(handler=_cmd_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="edge-facedet",
        description="Face detection on many camera streams, published to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-facedet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order `--help` lists them.
    _add_run_parser(commands)
    _add_check_config_parser(commands)
    _add_model_parser(commands)
    _add_media_parser(commands)
    _add_detect_parser(commands)
    _add_eval_parser(commands)
    # Listed for --help only: main() hands everything after `bench` to the suite's parser.
    commands.add_parser("bench", help="benchmark suite (source checkout; bench --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # First, before anything imports OpenVINO: no usage statistics sent (telemetry.py).
    disable_openvino_telemetry()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        return _cmd_bench(arguments[1:])
    args = build_parser().parse_args(arguments)
    if args.command != "run":
        setup_logging(os.environ.get("EDGE_FACEDET_LOG_LEVEL", "WARNING"))
    with exit_on_missing_home(code=EXIT_USAGE):
        code: int = args.handler(args)
    if "openvino" in sys.modules:
        exit_now(code)  # not through interpreter shutdown (exiting.py)
    return code


if __name__ == "__main__":
    sys.exit(main())
