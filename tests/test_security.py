"""Security properties of the running service: MQTT over mutual TLS with a password and an ACL,
no secret in anything the service shows, and a metrics endpoint that stays on loopback.

Every secret is a fresh marker (`...S3cret-<uuid>`), so a hit can only come from this run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme

from tests.support.broker import TlsFiles, mqtt_subscriber
from tests.support.net import free_port
from tests.support.paths import FACE_VIDEO
from tests.support.service import (
    ServiceProcess,
    edge_facedet_command,
    faces_of,
    new_node,
    poll,
    run_cli,
    service_config,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.support.broker import MosquittoBroker
    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer

# Fixtures shared with the fault tests (re-exported for pytest).


def _tls_files(directory: Path) -> tuple[TlsFiles, Path, Path]:
    """A CA, the broker's certificate, the service's client certificate and, from the same CA,
    a second client certificate (cert, key) for the test's subscriber."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    service = ca.issue_cert("edge-facedet-service")
    viewer = ca.issue_cert("viewer")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_file=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "service.pem",
        client_key=directory / "service.key",
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    for index, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(str(files.server_cert), append=index > 0)
    server.private_key_pem.write_to_path(str(files.server_key))
    service.cert_chain_pems[0].write_to_path(str(files.client_cert))
    service.private_key_pem.write_to_path(str(files.client_key))
    viewer.cert_chain_pems[0].write_to_path(str(directory / "viewer.pem"))
    viewer.private_key_pem.write_to_path(str(directory / "viewer.key"))
    return files, directory / "viewer.pem", directory / "viewer.key"


def _client_tls(files: TlsFiles, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.ca_file))
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


async def test_mqtt_over_mutual_tls_with_password_and_acl(
    model_root: Path,
    model_cache: Path,
    private_broker: Callable[..., MosquittoBroker],
    tmp_path: Path,
    services: Callable[..., ServiceProcess],
) -> None:
    files, viewer_cert, viewer_key = _tls_files(tmp_path / "tls")
    other_files, _, _ = _tls_files(tmp_path / "other-ca")
    node, prefix = new_node()
    wrong_ca_node, _ = new_node()
    service_password = f"MqttS3cret-{uuid.uuid4().hex}"
    viewer_password = f"Viewer-{uuid.uuid4().hex}"
    # The service may write under its own prefix only; the viewer may only read.
    acl = f"user svc\ntopic readwrite {prefix}/#\nuser viewer\ntopic read edge-facedet/#\n"
    broker = private_broker(
        users={"svc": service_password, "viewer": viewer_password},
        acl=acl,
        tls=files,
        require_certificate=True,
    )
    (tmp_path / "mqtt.pass").write_text(service_password + "\n")

    def config(node_id: str, tls: TlsFiles) -> dict[str, Any]:
        base = service_config(
            node_id=node_id,
            model_root=model_root,
            model_cache=model_cache,
            mqtt_port=broker.port,
            cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
        )
        base["mqtt"].update(
            {
                # An IP in the certificate's SANs: hostname verification stays on.
                "host": "127.0.0.1",
                "username": "svc",
                "password": {"file": str(tmp_path / "mqtt.pass")},
                "tls": {
                    "enabled": True,
                    "ca_file": str(tls.ca_file),
                    "cert_file": str(files.client_cert),
                    "key_file": str(files.client_key),
                },
            }
        )
        return base

    async with mqtt_subscriber(
        f"{prefix}/#",
        host="127.0.0.1",
        port=broker.port,
        username="viewer",
        password=viewer_password,
        tls_context=_client_tls(files, viewer_cert, viewer_key),
    ) as sub:
        good = services(config(node, files))
        # Same client certificate and password, but it trusts another CA: the broker's
        # certificate must be refused.
        wrong_ca = services(config(wrong_ca_node, other_files))
        await asyncio.to_thread(good.wait_ready)
        await asyncio.to_thread(wrong_ca.wait_ready)
        await sub.wait_for(lambda m: len(faces_of(m, prefix, "event")) >= 3, timeout=30)
        assert sub.on(f"{prefix}/status")[0].payload == b"online"
        wrong_metrics = await asyncio.to_thread(wrong_ca.metrics)
        good_metrics = await asyncio.to_thread(good.metrics)
    assert good_metrics["edge_facedet_mqtt_connected"][()] == 1
    assert wrong_metrics["edge_facedet_mqtt_connected"][()] == 0
    wrong_log = wrong_ca.log()
    assert "TLS handshake with MQTT broker" in wrong_log
    assert "certificate verify failed" in wrong_log
    for service in (good, wrong_ca):
        assert service_password not in service.log()
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0


def _listening_addresses(pid: int) -> list[str]:
    """Local addresses (ip:port, hex as in /proc/net) of every TCP socket `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                found.append(local)
    return found


async def test_no_secret_in_logs_metrics_health_mqtt_or_check_config(
    model_root: Path,
    model_cache: Path,
    private_broker: Callable[..., MosquittoBroker],
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    blackhole: int,
    tmp_path: Path,
    services: Callable[..., ServiceProcess],
) -> None:
    marker = uuid.uuid4().hex
    rtsp_secret = f"RtspS3cret-{marker}"
    camera_secret = f"CamS3cret-{marker}"
    mqtt_secret = f"MqttS3cret-{marker}"
    query_secret = f"QueryS3cret-{marker}"
    secrets = (rtsp_secret, camera_secret, mqtt_secret, query_secret)
    viewer_password = f"Viewer-{marker}"
    # At first the broker knows another password for `svc`: the service is refused.
    broker = private_broker(users={"svc": f"Other-{marker}", "viewer": viewer_password})
    server = rtsp_server(mounts={"lobby": h264_clip.repeated(seconds=60, width=640, height=480)})
    (tmp_path / "camera.pass").write_text(camera_secret + "\n")
    (tmp_path / "mqtt.pass").write_text(mqtt_secret + "\n")
    node, prefix = new_node()
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=broker.port,
        cameras=[
            # A real stream (the server ignores the credentials), killed later so its
            # errors, with the URL, get logged and published.
            {"id": "lobby", "url": server.url("lobby", userinfo=f"user:{rtsp_secret}")},
            # Never answers: a steady stream of open errors naming the URL.
            {"id": "dark", "url": f"rtsp://user:{rtsp_secret}@127.0.0.1:{blackhole}/x"},
            # Credentials from the config, inserted into the URL at open time.
            {
                "id": "door",
                "url": f"rtsp://127.0.0.1:{free_port()}/door",
                "username": "cam",
                "password": {"file": str(tmp_path / "camera.pass")},
            },
            # An MJPEG/CGI camera with its credentials in the query string.
            {
                "id": "cgi",
                "url": f"http://127.0.0.1:{blackhole}/videostream.cgi"
                f"?user=admin&pwd={query_secret}&rate=0",
            },
            {"id": "event", "url": str(FACE_VIDEO), "loop": True},
        ],
    )
    config["defaults"].update({"open_timeout_s": 2, "read_timeout_s": 2, "stall_timeout_s": 2})
    config["mqtt"].update({"username": "svc", "password": {"file": str(tmp_path / "mqtt.pass")}})
    # The default metrics bind address, only the port chosen.
    config["metrics"] = {"port": free_port()}
    service = services(config)
    await asyncio.to_thread(service.wait_ready)
    await poll(
        lambda: "refused the connection" in service.log(),
        timeout=20,
        what="the broker refusing the service",
    )
    # Now the broker learns the service's password (a restart rereads the password file).
    await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_passwd", "-b", str(broker.directory / "passwd"), "svc", mqtt_secret],
        check=True,
        capture_output=True,
    )
    broker.kill()
    broker.start()
    async with mqtt_subscriber(
        "#", host=broker.host, port=broker.port, username="viewer", password=viewer_password
    ) as sub:
        await poll(
            lambda: service.metrics()["edge_facedet_mqtt_connected"][()] == 1,
            timeout=30,
            what="connected after the broker learnt the password",
        )
        await sub.wait_for(lambda m: len(faces_of(m, prefix, "lobby")) >= 3, timeout=30)
        server.kill()
        await sub.wait_for(
            lambda m: any(
                x.topic == f"{prefix}/cameras/lobby/state"
                and json.loads(x.payload)["state"] == "reconnecting"
                for x in m
            ),
            timeout=20,
        )
        await asyncio.sleep(3)  # a few more reconnect errors of every broken camera
        metrics_status, metrics_page = await asyncio.to_thread(service.http_get, "/metrics")
        health_status, health_page = await asyncio.to_thread(service.http_get, "/healthz")
        assert service.process is not None
        listening = _listening_addresses(service.process.pid)
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0

    # Subscribing afresh: the retained states, last_error included.
    async with mqtt_subscriber(
        "#", host=broker.host, port=broker.port, username="viewer", password=viewer_password
    ) as late:
        await late.wait_for(
            lambda m: (
                {x.topic for x in m if x.retain}
                >= {f"{prefix}/cameras/{c}/state" for c in ("lobby", "dark", "door", "cgi")}
            ),
            timeout=10,
        )
    check = await asyncio.to_thread(
        subprocess.run,
        [*edge_facedet_command(), "check-config", str(service.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr

    log = service.log()
    mqtt_text = "\n".join(
        f"{m.topic} {m.payload.decode(errors='replace')}" for m in sub.messages + late.messages
    )
    shown = {
        "log": log,
        "metrics": metrics_page.decode(),
        "healthz": health_page.decode(),
        "mqtt": mqtt_text,
        "check-config": check.stdout + check.stderr,
    }
    for where, text in shown.items():
        for secret in secrets:
            assert secret not in text, f"{secret[:10]}... appears in {where}"
        assert marker not in text.replace(node, ""), f"part of a secret appears in {where}"
    # The scan saw the places where a leak would be: errors naming the credentialed URLs.
    assert "rtsp://***:***@127.0.0.1" in log
    assert "refused the connection" in log
    states = {
        m.topic.rsplit("/", 2)[-2]: json.loads(m.payload)
        for m in late.messages
        if m.topic.endswith("/state")
    }
    assert "***" in states["dark"]["last_error"]
    assert "cannot open" in states["door"]["last_error"]
    assert "videostream.cgi?user=***&pwd=***&rate=0" in states["cgi"]["last_error"]
    assert "videostream.cgi?user=***&pwd=***&rate=0" in log
    assert "videostream.cgi?user=***&pwd=***&rate=0" in check.stdout
    # The looping file camera keeps frames flowing while the others fail: healthy.
    health = json.loads(health_page)
    assert (metrics_status, health_status, health["healthy"]) == (200, 200, True), health
    assert health["cameras"]["event"] == "streaming"
    assert {health["cameras"][c] for c in ("lobby", "dark", "door", "cgi")} == {"reconnecting"}
    assert "rtsp://user:pass@127.0.0.1" not in check.stdout
    assert "***:***@" in check.stdout
    # The metrics endpoint, left at its default address, listens on loopback only.
    port_hex = f"{service.metrics_port:04X}"
    assert f"0100007F:{port_hex}" in listening
    assert all(address.startswith("0100007F:") for address in listening), listening


def test_errors_naming_the_url_are_redacted_on_the_exception_path(
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edge_facedet.cli import setup_logging
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.sources.reader import CameraReader, ReaderSettings
    from tests.test_camera import CallbackSink

    secret = f"RtspS3cret-{uuid.uuid4().hex}"
    server = rtsp_server(mounts={"cam": h264_clip.repeated(seconds=60, width=640, height=480)})
    url = server.url("cam", userinfo=f"user:{secret}")

    # 1. A consumer bug whose exception text quotes the camera URL (as FFmpeg errors do).
    def consumer(_frame: object) -> None:
        raise RuntimeError(f"could not handle a frame from {url} (password {secret})")

    caplog.set_level(logging.ERROR, logger="edge_facedet.sources.reader")
    reader = CameraReader(
        settings=ReaderSettings(camera_id="cam", url=url, detect_fps=5, input_size=(448, 448)),
        sink=CallbackSink(put=consumer),
        on_status=lambda _status: None,
        metrics=Metrics(),
    )
    reader.start()
    deadline = time.monotonic() + 20
    while "consumer failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.1)
    reader.stop()
    assert reader.join(5)
    assert "consumer failed" in caplog.text
    assert "RuntimeError" in caplog.text
    assert secret not in caplog.text

    # 2. An exception logged with its traceback through the CLI's log set-up.
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiomqtt").level)
    try:
        setup_logging("INFO", secrets=[secret])

        def fail() -> None:
            raise ValueError(f"cannot open {url}; password was {secret}")

        try:
            fail()
        except ValueError:
            logging.getLogger("edge_facedet.test").exception("forced failure")
    finally:
        # The CLI replaces the root handlers; pytest's own must come back for later tests.
        root.handlers[:], level, aiomqtt_level = saved
        root.setLevel(level)
        logging.getLogger("aiomqtt").setLevel(aiomqtt_level)
    stderr = capsys.readouterr().err
    assert "forced failure" in stderr and "Traceback" in stderr
    assert secret not in stderr
    assert "rtsp://***:***@127.0.0.1" in stderr


@contextlib.contextmanager
def _cli_logging(secrets: list[str]) -> Iterator[None]:
    """The CLI's log set-up for the duration; pytest's own handlers come back after."""
    from edge_facedet.cli import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiomqtt").level)
    try:
        setup_logging("INFO", secrets=secrets)
        yield
    finally:
        root.handlers[:], level, aiomqtt_level = saved
        root.setLevel(level)
        logging.getLogger("aiomqtt").setLevel(aiomqtt_level)


def test_short_secrets_leave_log_lines_readable(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: every "e" of every line became "***", which garbled the log and showed the
    # password as the pattern of what went missing. Short secrets are redacted where the
    # structure shows them (URLs), long ones everywhere.
    long_secret = f"LongS3cret-{uuid.uuid4().hex}"
    lines = [
        "camera door: reconnected after 5 seconds; every frame decoded",
        (
            "camera camera: cannot open http://admin:e@192.0.2.1/video.cgi"
            "?user=admin&pwd=camera (Connection refused)"
        ),
        f"an exception text quoting the password {long_secret} outside any URL",
    ]
    with _cli_logging(["e", "camera", long_secret]):
        for line in lines:
            logging.getLogger("edge_facedet.test").warning("%s", line)
    stderr = capsys.readouterr().err
    assert "camera door: reconnected after 5 seconds; every frame decoded" in stderr
    assert (
        "camera camera: cannot open http://***:***@192.0.2.1/video.cgi?user=***&pwd=*** "
        "(Connection refused)"
    ) in stderr
    assert "an exception text quoting the password *** outside any URL" in stderr
    assert long_secret not in stderr


def test_query_string_credentials_are_redacted_in_camera_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An MJPEG/CGI camera with its credentials in the query, refusing connections: the error
    # that names the URL goes to the log and to the retained state's last_error.
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.payloads import camera_state_payload
    from edge_facedet.sources.reader import CameraReader, ReaderSettings
    from edge_facedet.sources.settings import ReconnectPolicy, StreamTimeouts
    from tests.test_camera import CallbackSink

    secret = f"QueryS3cret-{uuid.uuid4().hex}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/videostream.cgi?user=admin&pwd={secret}&rate=0"
    statuses: list[Any] = []
    caplog.set_level(logging.INFO, logger="edge_facedet")
    reader = CameraReader(
        settings=ReaderSettings(
            camera_id="cgi",
            url=url,
            detect_fps=5,
            input_size=(448, 448),
            timeouts=StreamTimeouts(open_s=1, read_s=1, stall_s=1),
            reconnect=ReconnectPolicy(initial_s=0.1, max_s=0.2),
        ),
        sink=CallbackSink(put=lambda _frame: None),
        on_status=statuses.append,
        metrics=Metrics(),
    )
    reader.start()
    deadline = time.monotonic() + 20
    while not any(s.last_error for s in statuses) and time.monotonic() < deadline:
        time.sleep(0.05)
    reader.stop()
    assert reader.join(5)
    errors = [s.last_error for s in statuses if s.last_error]
    assert errors, "the reader reported no error"
    shown = f"127.0.0.1:{port}/videostream.cgi?user=***&pwd=***&rate=0"
    assert shown in errors[0]
    assert shown in caplog.text
    payload = camera_state_payload(
        camera_id="cgi",
        state="reconnecting",
        fps_in=0.0,
        fps_out=0.0,
        last_error=errors[-1],
        reconnects=1,
        frame_width=None,
        frame_height=None,
        now=datetime.now(timezone.utc),
    ).decode()
    assert shown in payload
    for text in (*errors, caplog.text, payload):
        assert secret not in text


_DEBUG_OFF = {
    "OPENCV_VIDEOIO_DEBUG": "0",
    "OPENCV_VIDEOCAPTURE_DEBUG": "FALSE",
    "OPENCV_FFMPEG_DEBUG": "false",
    "OPENCV_FFMPEG_LOGLEVEL": "16",
    "OPENCV_LOG_LEVEL": "INFO",
}


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OPENCV_VIDEOIO_DEBUG": "1"}, "OPENCV_VIDEOIO_DEBUG=1"),
        (
            {"OPENCV_FFMPEG_DEBUG": "true", "OPENCV_LOG_LEVEL": "VERBOSE"},
            "OPENCV_FFMPEG_DEBUG=true",
        ),
        ({"OPENCV_FFMPEG_LOGLEVEL": "48"}, "OPENCV_FFMPEG_LOGLEVEL=48"),
        ({}, None),
    ],
)
def test_debug_variables_that_print_urls_are_warned_about_at_start(
    tmp_path: Path, variables: dict[str, str], named: str | None
) -> None:
    # OpenCV's and FFmpeg's debug output goes to stderr past the redacting formatter, with
    # full URLs. A missing model makes `run` stop right after the warning (exit 2).
    path = tmp_path / "config.yaml"
    path.write_text(
        f"model: {{path: {tmp_path / 'missing.xml'}}}\n"
        "metrics: {enabled: false}\n"
        "cameras: [{id: a, url: 'rtsp://192.0.2.1/x'}]\n"
    )
    result = run_cli("run", "--config", path, timeout=60, env={**_DEBUG_OFF, **variables})
    assert result.returncode == 2, result.stderr
    assert "model.path" in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "debug output" in line]
    if named is None:
        assert warnings == []
        return
    assert len(warnings) == 1, result.stderr
    assert "WARNING" in warnings[0]
    assert named in warnings[0]
    assert "passwords" in warnings[0]
    if "OPENCV_LOG_LEVEL" in variables:
        assert "OPENCV_LOG_LEVEL=VERBOSE" in warnings[0]


@pytest.mark.parametrize("host", ["no-such-host.invalid", "192.0.2.1"])
def test_unusable_metrics_host_exits_2_naming_the_field(
    model_root: Path, model_cache: Path, tmp_path: Path, host: str
) -> None:
    # Before: an OS error from the bind, exit 1 (and systemd restarts a config that cannot
    # work). An address of another host fails the same way as a name that does not resolve.
    node, _ = new_node()
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=free_port(),
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    config["metrics"] = {"host": host, "port": free_port()}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    result = run_cli("run", "--config", path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{path}: metrics.host: cannot listen on {host!r}" in result.stderr
    assert "Traceback" not in result.stderr
