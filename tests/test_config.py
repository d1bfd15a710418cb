"""Config loading: the shipped configs, defaults, paths, secrets, the bad-config corpus, the CLI.

Every bad config is a real file under tests/data/configs/bad/ with the message fragments it
must produce listed in BAD_CASES; secrets in them are the distinctive `S3cr3t-XYZZY`, which no
message may contain.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import typing
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_facedet import cli
from edge_facedet.checkconfig import check_config
from edge_facedet.config import (
    MAX_CONFIG_BYTES,
    CameraConfig,
    ConfigError,
    ModelConfig,
    PublishPolicy,
    SecretSource,
    ServiceConfig,
    detect_open_url,
    display_detect_url,
    display_url,
    load_config,
)
from edge_facedet.inference.model import PerformanceHint, Precision, model_xml_path
from edge_facedet.redact import redact_text, redact_url
from edge_facedet.sources.decoders import Decoder
from edge_facedet.tools import assets
from tests.support.paths import REPO
from tests.support.service import edge_facedet_command, run_cli

CONFIGS = REPO / "tests" / "data" / "configs"
BAD = CONFIGS / "bad"
GOOD = CONFIGS / "good"
SECRET = "S3cr3t-XYZZY"  # noqa: S105 - the marker whose absence the tests check
# No CREDENTIALS_DIRECTORY and no MQTT_PASSWORD from the developer's shell.
NO_ENV: dict[str, str] = {}

# file name -> fragments the message must contain (the field path, with the camera id for
# camera fields, and what is wrong).
BAD_CASES: dict[str, tuple[str, ...]] = {
    "wrong-type-fps.yaml": ("cameras[0] (id 'cam1').detect_fps", "valid number"),
    "wrong-type-port.yaml": ("mqtt.port", "valid integer"),
    "wrong-type-enabled.yaml": ("cameras[0] (id 'cam1').enabled", "valid boolean"),
    "unknown-top-level.yaml": ("camras", "Extra inputs"),
    "unknown-nested.yaml": ("mqtt.tls.verify", "Extra inputs"),
    "unknown-camera-key.yaml": ("cameras[1] (id 'door').fsp", "Extra inputs"),
    "duplicate-camera-id.yaml": ("cameras", "duplicate camera id 'door'", "cameras[1]"),
    "duplicate-yaml-key.yaml": ("line 4", "duplicate key 'detect_fps'", "first at line 2"),
    "url-unsupported-scheme.yaml": ("cameras[0] (id 'cam1').url", "unsupported URL scheme 'ftp'"),
    "url-no-host.yaml": ("cameras[0] (id 'cam1').url", "no host"),
    "url-control-chars.yaml": ("cameras[0] (id 'cam1').url", "control characters"),
    "url-missing-slashes.yaml": ("cameras[0] (id 'cam1').url", "malformed URL"),
    "fps-negative.yaml": ("cameras[0] (id 'cam1').detect_fps", "greater than or equal to 0.01"),
    "fps-zero-in-defaults.yaml": ("defaults.detect_fps", "greater than or equal to 0.01"),
    "fps-nan.yaml": ("cameras[0] (id 'cam1').detect_fps", "finite number"),
    "fps-inf-in-defaults.yaml": ("defaults.detect_fps", "finite number"),
    "fps-denormal.yaml": ("cameras[0] (id 'cam1').detect_fps", "greater than or equal to 0.01"),
    "floats-not-finite.yaml": (
        "model.batch_wait_ms: Input should be a finite number",
        "mqtt.reconnect_max_s: Input should be a finite number",
        "cameras[0] (id 'cam1').open_timeout_s: Input should be a finite number",
        "cameras[0] (id 'cam1').roi.x_min: Input should be a finite number",
        "cameras[0] (id 'cam1').publish.heartbeat_s: Input should be a finite number",
    ),
    "floats-too-small.yaml": (
        "mqtt.reconnect_initial_s: Input should be greater than or equal to 0.01",
        "cameras[0] (id 'cam1').read_timeout_s: Input should be greater than or equal to 0.1",
        "cameras[0] (id 'cam1').max_lag_s: Input should be greater than or equal to 0.01",
        "cameras[0] (id 'cam1').publish.heartbeat_s: Input should be greater than or equal to 0.1",
    ),
    "threshold-above-one.yaml": (
        "cameras[0] (id 'cam1').confidence_threshold",
        "less than or equal to 1",
    ),
    "roi-unordered.yaml": ("cameras[0] (id 'cam1').roi.x_max", "x_min < x_max"),
    "missing-cameras.yaml": ("cameras", "Field required"),
    "empty-camera-list.yaml": ("cameras", "at least 1"),
    "camera-not-a-mapping.yaml": ("cameras[0]", "valid dictionary"),
    "empty.yaml": ("empty",),
    "comments-only.yaml": ("must be a mapping", "empty"),
    "not-a-mapping.yaml": ("must be a mapping", "list"),
    "scalar.yaml": ("must be a mapping", "str"),
    "non-utf8.yaml": ("not UTF-8", "offset 21"),
    "billion-laughs.yaml": ("line 1", "anchors and aliases", "not supported"),
    "alias-merge-key.yaml": ("line 1", "anchors and aliases", "not supported"),
    "deep-nesting.yaml": ("line 1", "nested more than"),
    "multiple-documents.yaml": ("line 4", "invalid YAML"),
    "yaml-syntax-error.yaml": ("line 4", "invalid YAML"),
    "password-file-missing.yaml": (
        "cameras[0] (id 'door').password",
        "password file",
        "door.pass.missing",
        "No such file",
    ),
    "password-file-is-directory.yaml": ("mqtt.password", "password file", "Is a directory"),
    "password-without-username.yaml": ("mqtt.password", "username is not"),
    "camera-password-without-username.yaml": (
        "cameras[0] (id 'cam1').password",
        "username is not",
    ),
    "secret-two-sources.yaml": ("mqtt.password", "exactly one", "got env, value"),
    "secret-plain-string.yaml": ("mqtt.password", "mapping"),
    "secret-as-key.yaml": ("mqtt.password.<unknown key>", "Extra inputs"),
    "secret-int-value.yaml": ("mqtt.password.value", "valid string"),
    "secret-inline-other-error.yaml": ("mqtt.keepalive_s", "greater than or equal to 5"),
    "secret-yaml-syntax-error.yaml": ("line 4", "invalid YAML"),
    "secret-duplicate-key.yaml": ("line 5", "duplicate key 'value'"),
    "secret-url-bad-port.yaml": ("cameras[0] (id 'door').url", "malformed URL"),
    "secret-url-and-username.yaml": ("cameras[0] (id 'door').username", "already contains"),
    "secret-url-unencoded-slash.yaml": ("cameras[0] (id 'door').url", "percent-encode"),
    "secret-url-bad-scheme.yaml": ("cameras[0] (id 'door').url", "'gopher'"),
    "secret-env-missing.yaml": (
        "mqtt.password",
        "environment variable EDGE_FACEDET_TEST_UNSET_VARIABLE is not set",
    ),
    "secret-credential-missing.yaml": (
        "mqtt.password",
        "credential mqtt-password",
        "CREDENTIALS_DIRECTORY",
    ),
    "tls-insecure.yaml": ("mqtt.tls.insecure", "allow_insecure"),
    "tls-cert-without-key.yaml": ("mqtt.tls.key_file", "go together"),
    "tls-ca-without-enabled.yaml": ("mqtt.tls.ca_file", "not enabled"),
    "tls-ca-missing.yaml": ("mqtt.tls.ca_file", "missing-ca.pem", "No such file"),
    "bad-device.yaml": ("model.device", "AUTO device list"),
    "bad-device-lowercase.yaml": ("model.device", "CPU, GPU"),
    "bad-device-list-on-physical.yaml": ("model.device", "take a device list"),
    "bad-node-id.yaml": ("node_id", "letters, digits"),
    "bad-camera-id.yaml": ("cameras[0] (id 'front/door').id", "letters, digits"),
    "topic-wildcard.yaml": ("mqtt.topic_prefix", "wildcards"),
    "topic-empty-level.yaml": ("mqtt.topic_prefix", "empty levels"),
    "topic-c1-control.yaml": ("mqtt.topic_prefix", "control characters"),
    "topic-noncharacter.yaml": ("mqtt.topic_prefix", "non-characters"),
    "c1-control-in-names.yaml": (
        "mqtt.username: username cannot contain control characters",
        "cameras[0] (id 'door').name: name cannot contain control characters",
        "cameras[0] (id 'door').url: URL contains control characters",
        "cameras[1] (id 'yard').username: cannot contain control characters",
    ),
    "mqtt-host-is-url.yaml": ("mqtt.host", "not a URL"),
    "port-out-of-range.yaml": ("mqtt.port", "65535"),
    "metrics-port-negative.yaml": ("metrics.port", "greater than or equal to 0"),
    "precision-unknown.yaml": ("model.precision", "'FP16-INT8'"),
    "reconnect-order.yaml": ("cameras[0] (id 'cam1').reconnect_max_s", "reconnect_initial_s"),
    "username-on-file-camera.yaml": ("cameras[0] (id 'clip').username", "network URLs"),
    "realtime-false-on-rtsp.yaml": ("cameras[1] (id 'door').realtime", "files only"),
    "publish-policy-unknown.yaml": ("cameras[0] (id 'cam1').publish.policy", "on_change"),
    "keyframes-only-without-pyav.yaml": ("cameras[1] (id 'yard').keyframes_only", "decoder: pyav"),
    "skip-loop-filter-without-pyav.yaml": (
        "cameras[0] (id 'door').skip_loop_filter",
        "decoder: pyav",
    ),
    "pyav-on-device.yaml": ("cameras[0] (id 'desk').decoder", "not V4L2 devices"),
    "keyframes-only-on-file.yaml": ("cameras[0] (id 'clip').keyframes_only", "not files"),
    "decoder-unknown.yaml": ("cameras[0] (id 'door').decoder", "'opencv' or 'pyav'"),
}

# Fragments that must NOT appear: errors in defaults are not blamed on every camera.
BAD_ABSENT: dict[str, tuple[str, ...]] = {
    "fps-zero-in-defaults.yaml": ("cameras",),
}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, *, environ: typing.Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=NO_ENV if environ is None else environ)
    return str(info.value)


# ------------------------------------------------------------------------------------------
# The bad-config corpus


def test_corpus_and_table_agree() -> None:
    on_disk = {p.name for p in BAD.iterdir()}
    assert on_disk == set(BAD_CASES), "every corpus file needs a table entry and vice versa"
    assert len(on_disk) >= 25


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_config_is_reported(name: str) -> None:
    path = BAD / name
    message = _error(path)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), f"every line names the file: {line!r}"
    for fragment in BAD_CASES[name]:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"
    for fragment in BAD_ABSENT.get(name, ()):
        assert fragment not in message, f"{fragment!r} unexpectedly in:\n{message}"
    assert "XYZZY" not in message
    assert "Traceback" not in message


def test_the_corpus_really_holds_the_secret() -> None:
    # Guards the absence checks above: they mean something only if the secret is in the input.
    holding = [p.name for p in BAD.iterdir() if SECRET.encode() in p.read_bytes()]
    assert len(holding) >= 8


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    filler = "# padding padding padding padding padding padding padding padding\n"
    _write(path, (BAD / "wrong-type-fps.yaml").read_text() + filler * (MAX_CONFIG_BYTES // 60))
    assert path.stat().st_size > MAX_CONFIG_BYTES
    message = _error(path)
    assert str(path) in message
    assert "larger than" in message


def test_a_device_file_is_not_read_forever() -> None:
    message = _error(Path("/dev/zero"))
    assert message == "/dev/zero: is not a regular file (a character device)"


def test_missing_and_directory_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(missing) in _error(missing)
    assert "No such file" in _error(missing)
    assert "Is a directory" in _error(tmp_path)


def test_fifo_config_and_secret_files_are_refused_not_waited_on(tmp_path: Path) -> None:
    # Before: open() of a FIFO waits for a writer, so check-config and run hung (here: the
    # subprocess timeout). Every file a config names is refused the same way.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    os.mkfifo(credentials / "cam-password")
    for command in (["check-config", fifo], ["run", "--config", fifo]):
        result = run_cli(*command, timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"{fifo}: is not a regular file (a FIFO)" in result.stderr
        assert "Traceback" not in result.stderr
    config = _write(
        tmp_path / "c.yaml",
        f"mqtt:\n  username: u\n  password: {{file: {fifo}}}\n"
        f"  tls: {{enabled: true, ca_file: {fifo}}}\n"
        "cameras:\n"
        "  - {id: door, url: 'rtsp://h/x', username: u, password: {credential: cam-password}}\n",
    )
    environ = {"CREDENTIALS_DIRECTORY": str(credentials)}
    result = run_cli("check-config", config, timeout=30, env=environ)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{config}: mqtt.password: password file {fifo}: is not a regular file (a FIFO)",
        (
            f"{config}: cameras[0] (id 'door').password: credential "
            f"{credentials / 'cam-password'}: is not a regular file (a FIFO)"
        ),
        f"{config}: mqtt.tls.ca_file: {fifo} is not a regular file (a FIFO)",
    ]


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "node_id: 'bad id'\nmqtt: {port: 0}\n"
        "cameras:\n  - {id: a, url: 'rtsp://h/x', detect_fps: 0}\n"
        "  - {id: b, url: 'ftp://h/x'}\n",
    )
    lines = _error(path).splitlines()
    assert len(lines) == 4
    assert any("node_id" in line for line in lines)
    assert any("mqtt.port" in line for line in lines)
    assert any("cameras[0] (id 'a').detect_fps" in line for line in lines)
    assert any("cameras[1] (id 'b').url" in line for line in lines)


def test_unreadable_secrets_are_all_listed_without_content(tmp_path: Path) -> None:
    secret_file = _write(tmp_path / "ok.pass", SECRET + "\n")
    path = _write(
        tmp_path / "c.yaml",
        f"mqtt:\n  username: u\n  password: {{file: {secret_file.name}}}\n"
        "cameras:\n"
        "  - {id: a, url: 'rtsp://h/x', username: u, password: {file: missing.pass}}\n"
        "  - {id: b, url: 'rtsp://h/y', username: u, password: {env: CAM_B_PASSWORD}}\n",
    )
    message = _error(path, environ={"UNRELATED": SECRET})
    lines = message.splitlines()
    assert len(lines) == 2
    assert f"cameras[0] (id 'a').password: password file {tmp_path / 'missing.pass'}" in lines[0]
    assert "cameras[1] (id 'b').password: environment variable CAM_B_PASSWORD" in lines[1]
    assert SECRET not in message


# ------------------------------------------------------------------------------------------
# The shipped configs


def _example_secrets(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of example.yaml with the files and credentials it refers to."""
    config = tmp_path / "etc" / "example.yaml"
    config.parent.mkdir()
    shutil.copy(REPO / "config" / "example.yaml", config)
    _write(config.parent / "secrets" / "door.pass", "door-password\n")
    _write(config.parent / "tls" / "ca.pem", "not parsed at load time\n")
    credentials = tmp_path / "credentials"
    _write(credentials / "mqtt-password", "mqtt-password-value")
    _write(credentials / "yard-password", "yard pass/with:odd@chars\n")
    return config, {"CREDENTIALS_DIRECTORY": str(credentials)}


def test_example_yaml_loads_with_its_secrets(tmp_path: Path) -> None:
    path, environ = _example_secrets(tmp_path)
    config = load_config(path, environ=environ)
    etc = path.parent
    ids = [camera.id for camera in config.cameras]
    assert ids == ["door", "yard", "lobby", "desk", "recording"]
    cameras = {camera.id: camera for camera in config.cameras}
    assert cameras["recording"].url == str(etc / "recordings" / "entrance.mp4")
    assert cameras["desk"].url == "/dev/video0"
    assert config.mqtt.tls.ca_file == etc / "tls" / "ca.pem"
    assert config.mqtt.effective_port == 8883
    assert cameras["yard"].publish.policy is PublishPolicy.ON_FACES
    # The door camera's password is read from the file next to the config, and inserted
    # into its substream, the stream read for detection.
    door_detect = detect_open_url(cameras["door"], environ=environ)
    assert door_detect == "rtsp://viewer:door-password@192.0.2.10:554/Streaming/Channels/102"
    yard = detect_open_url(cameras["yard"], environ=environ)
    assert yard == "rtsps://edge:yard%20pass%2Fwith%3Aodd%40chars@192.0.2.11:322/stream1"
    assert config.mqtt.password is not None
    assert config.mqtt.password.reveal(environ=environ) == "mqtt-password-value"


def test_example_yaml_as_shipped_names_its_missing_secrets() -> None:
    message = _error(REPO / "config" / "example.yaml")
    assert "mqtt.password: credential mqtt-password" in message
    assert "cameras[0] (id 'door').password: password file" in message
    assert "cameras[1] (id 'yard').password: credential yard-password" in message
    assert "mqtt.tls.ca_file" in message


def test_demo_yaml_loads_with_file_cameras_from_the_setup_layout() -> None:
    config = load_config(REPO / "config" / "demo.yaml", environ=NO_ENV)
    assert config.node_id == "demo"
    assert config.model.precision == "FP16-INT8"
    assert config.model.device == "AUTO"
    assert config.model.dir == REPO / "config" / ".." / ".models"
    assert (config.mqtt.host, config.mqtt.effective_port) == ("127.0.0.1", 1883)
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9108)
    assert 2 <= len(config.cameras) <= 3
    # deploy/setup.sh runs `media fetch --dest .media`: the clips must be where it puts them.
    installed = {os.path.normpath(REPO / ".media" / asset.relpath) for asset in assets.DEMO_MEDIA}
    for camera in config.cameras:
        assert camera.loop
        assert camera.publish.policy is PublishPolicy.ON_CHANGE
        assert os.path.normpath(camera.url) in installed


def test_precision_choices_match_the_asset_manifest() -> None:
    choices = [precision.value for precision in ModelConfig.model_fields["precision"].annotation]
    assert set(choices) == set(assets.PRECISIONS)


def test_every_precision_has_a_manifest_entry_and_a_cli_choice() -> None:
    # One spelling: the config's field type, the manifest and the CLI all come from Precision.
    assert ModelConfig.model_fields["precision"].annotation is Precision
    for precision in Precision:
        xml, binary = assets.MODEL_FILES[precision]
        assert (xml.name, binary.name) == (f"{assets.MODEL_NAME}.xml", f"{assets.MODEL_NAME}.bin")
        assert f"/{precision.value}/" in xml.relpath
    assert set(assets.MODEL_FILES) == set(Precision)
    assert sorted(precision.value for precision in Precision) == list(cli.PRECISION_CHOICES)
    parser = cli.build_parser()
    for command in (
        ["model", "fetch"],
        ["detect", "x.jpg"],
        ["eval", "--images", "i", "--gt", "g"],
    ):
        for precision in Precision:
            args = parser.parse_args([*command, "--precision", precision.value])
            assert args.precision == precision.value
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
            parser.parse_args([*command, "--precision", "INT4"])


def test_model_layout_and_enum_spellings(tmp_path: Path) -> None:
    # The service finds the IR where `model fetch` puts it: one layout, defined once.
    for precision in Precision:
        xml = model_xml_path(tmp_path, precision)
        assert xml == tmp_path / assets.MODEL_FILES[precision][0].relpath
        assert xml == assets.model_xml_path(tmp_path, precision.value)
    assert model_xml_path(tmp_path, Precision.FP16_INT8) == (
        tmp_path / "intel" / "face-detection-0204" / "FP16-INT8" / "face-detection-0204.xml"
    )
    # Messages and the check-config summary print the value, not the member name.
    assert f"{Precision.FP16_INT8} {PerformanceHint.LATENCY}" == "FP16-INT8 LATENCY"
    model = ModelConfig.model_validate({"precision": "FP32", "performance_hint": "LATENCY"})
    assert model.precision is Precision.FP32
    assert model.performance_hint is PerformanceHint.LATENCY
    camera = CameraConfig.model_validate({"id": "c", "url": "rtsp://h/x", "decoder": "pyav"})
    assert camera.decoder is Decoder.PYAV


# ------------------------------------------------------------------------------------------
# Defaults, paths


def test_defaults_merge_camera_wins_and_publish_is_merged_keywise() -> None:
    config = load_config(GOOD / "defaults-merge.yaml", environ=NO_ENV)
    inherits, overrides, empty_publish = config.cameras
    assert (inherits.detect_fps, inherits.confidence_threshold) == (3, 0.7)
    assert inherits.publish.policy is PublishPolicy.ON_FACES
    assert inherits.publish.heartbeat_s == 30
    assert overrides.detect_fps == 10
    assert overrides.confidence_threshold == 0.7
    # Only heartbeat_s overridden: the policy still comes from defaults.publish.
    assert overrides.publish.policy is PublishPolicy.ON_FACES
    assert overrides.publish.heartbeat_s == 5
    assert empty_publish.publish == inherits.publish


def test_unmerged_fields_keep_model_defaults() -> None:
    config = load_config(GOOD / "minimal.yaml", environ=NO_ENV)
    (camera,) = config.cameras
    assert camera.detect_fps == 5.0
    assert camera.publish.policy is PublishPolicy.ON_CHANGE
    assert config.mqtt.effective_port == 1883


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    shutil.copy(GOOD / "relative-paths.yaml", conf / "c.yaml")
    for name in ("secrets/mqtt.pass", "tls/ca.pem", "tls/client.pem", "tls/client.key"):
        _write(conf / name, "x\n")
    # The working directory must not matter.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "conf" / "c.yaml", environ=NO_ENV)
    base = tmp_path / "conf"  # absolute, normalised: independent of the working directory
    assert config.model.path == base / "models" / "face.xml"
    assert config.model.dir == base / ".." / "models"
    assert config.model.cache_dir == base / "cache"
    assert config.mqtt.password is not None
    assert config.mqtt.password.file == base / "secrets" / "mqtt.pass"
    assert config.mqtt.tls.ca_file == base / "tls" / "ca.pem"
    assert config.mqtt.tls.key_file == base / "tls" / "client.key"
    urls = {camera.id: camera.url for camera in config.cameras}
    assert urls == {
        "clip": str(base / "clips" / "entrance.mp4"),
        "absolute": "/srv/clips/x.mp4",
        "usb": "/dev/video0",
        "index": "0",
        "fileurl": "file:///srv/clips/y.mp4",
    }


def test_device_index_may_be_an_integer(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "cameras: [{id: usb, url: 0}, {id: usb2, url: '1'}]\n")
    assert [c.url for c in load_config(path, environ=NO_ENV).cameras] == ["0", "1"]


def test_summary_brackets_ipv6_hosts(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "mqtt: {host: '::1'}\nmetrics: {host: '::'}\ncameras: [{id: a, url: 'rtsp://h/x'}]\n",
    )
    out = io.StringIO()
    assert check_config(path, out=out, err=io.StringIO()) == 0
    assert "mqtt: [::1]:1883, TLS no\n" in out.getvalue()
    assert "metrics: http://[::]:9108/metrics" in out.getvalue()


def test_models_without_a_file_keep_paths_as_given() -> None:
    # Other modules build configs in code: no context, no resolution.
    camera = CameraConfig(id="c", url="clips/a.mp4")
    assert camera.url == "clips/a.mp4"


# ------------------------------------------------------------------------------------------
# Secrets


def test_secret_from_file_strips_one_newline(tmp_path: Path) -> None:
    path = _write(tmp_path / "p", "  pass word \n\n")
    assert SecretSource(file=path).reveal() == "  pass word \n"
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b"pw\r\n")
    assert SecretSource(file=crlf).reveal() == "pw"
    assert SecretSource(file=path).describe() == f"file {path}"


def test_secret_from_env_and_inline() -> None:
    assert SecretSource(env="PW").reveal(environ={"PW": SECRET}) == SECRET
    assert SecretSource(env="PW").describe() == "env PW"
    inline = SecretSource.model_validate({"value": f" {SECRET} "})
    assert inline.reveal() == f" {SECRET} "  # not stripped
    assert inline.describe() == "inline value"
    assert SECRET not in repr(inline)
    assert SECRET not in str(inline.model_dump())


def test_secret_from_credentials_directory(tmp_path: Path) -> None:
    _write(tmp_path / "mqtt-password", SECRET + "\n")
    source = SecretSource(credential="mqtt-password")
    assert source.describe() == "credential mqtt-password"
    assert source.reveal(credentials_dir=tmp_path) == SECRET
    assert source.reveal(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == SECRET


@pytest.mark.parametrize(
    ("source", "kwargs", "fragments"),
    [
        ({"file": "/nonexistent/pw"}, {}, ("password file /nonexistent/pw", "No such file")),
        ({"env": "NOT_SET_PW"}, {"environ": {}}, ("environment variable NOT_SET_PW",)),
        ({"credential": "pw"}, {"environ": {}}, ("credential pw", "CREDENTIALS_DIRECTORY")),
        (
            {"credential": "pw"},
            {"credentials_dir": Path("/nonexistent/creds")},
            ("credential /nonexistent/creds/pw", "No such file"),
        ),
        ({"env": "EMPTY_PW"}, {"environ": {"EMPTY_PW": ""}}, ("env EMPTY_PW", "empty")),
    ],
)
def test_missing_secret_names_the_source(
    source: dict[str, str], kwargs: dict[str, typing.Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        SecretSource.model_validate(source).reveal(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_secret_file_errors_never_show_content(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(SECRET.encode() + b"\xe9")
    with pytest.raises(ConfigError) as info:
        SecretSource(file=latin1).reveal()
    assert "not UTF-8" in str(info.value)
    assert "XYZZY" not in str(info.value)
    big = _write(tmp_path / "big", SECRET * 10_000)
    with pytest.raises(ConfigError) as info:
        SecretSource(file=big).reveal()
    assert "larger than" in str(info.value)
    assert "XYZZY" not in str(info.value)


@pytest.mark.parametrize("name", [".", ".."])
def test_credential_name_cannot_escape_the_directory(name: str) -> None:
    with pytest.raises(ValueError, match="credential name"):
        SecretSource(credential=name)


# ------------------------------------------------------------------------------------------
# Camera URLs


def _credentials_config(tmp_path: Path) -> tuple[ServiceConfig, dict[str, str]]:
    creds = tmp_path / "creds"
    _write(creds / "door-password", "p@ss:w/rd #1?\n")
    environ = {"MQTT_PASSWORD": SECRET, "CREDENTIALS_DIRECTORY": str(creds)}
    return load_config(GOOD / "credentials.yaml", environ=environ), environ


def test_camera_open_url_inserts_percent_encoded_credentials(tmp_path: Path) -> None:
    config, environ = _credentials_config(tmp_path)
    door, inline, ipv6 = config.cameras
    url = detect_open_url(door, environ=environ)
    assert url == "rtsp://viewer%40site:p%40ss%3Aw%2Frd%20%231%3F@192.0.2.1:554/stream"
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("192.0.2.1", 554, "/stream")
    assert parts.username is not None
    assert parts.password is not None
    assert unquote(parts.username) == "viewer@site"
    assert unquote(parts.password) == "p@ss:w/rd #1?"
    # Credentials already in the URL are passed through as written.
    assert detect_open_url(inline) == f"rtsp://admin:{SECRET}@192.0.2.2/stream"
    v6 = urlsplit(detect_open_url(ipv6))
    assert (v6.hostname, v6.port, v6.password) == (
        "2001:db8::1",
        8554,
        quote("p@ss:w/rd?#", safe=""),
    )


def test_display_url_is_redacted(tmp_path: Path) -> None:
    config, _ = _credentials_config(tmp_path)
    door, inline, ipv6 = config.cameras
    assert display_url(door) == "rtsp://***:***@192.0.2.1:554/stream"
    assert display_url(inline) == "rtsp://***:***@192.0.2.2/stream"
    assert display_url(ipv6) == "rtsp://***:***@[2001:db8::1]:8554/live"
    plain = CameraConfig(id="p", url="rtsp://192.0.2.9/live")
    assert display_url(plain) == "rtsp://192.0.2.9/live"
    assert detect_open_url(plain) == "rtsp://192.0.2.9/live"


def test_query_string_credentials_are_redacted_in_check_config(tmp_path: Path) -> None:
    # MJPEG/CGI cameras take their credentials as query parameters; before, check-config
    # printed them verbatim.
    path = _write(
        tmp_path / "c.yaml",
        "cameras:\n"
        f"  - {{id: cgi, url: 'http://192.0.2.5/videostream.cgi?user=admin&pwd={SECRET}&rate=0'}}\n"
        f"  - {{id: snap, url: 'http://192.0.2.6/snap.jpg?Password={SECRET}-2&res=720',\n"
        f"      detect_url: 'http://192.0.2.6/sub.jpg?passwd={SECRET}-3&api_key={SECRET}-4'}}\n",
    )
    result = _run_cli(str(path))
    assert result.returncode == 0, result.stderr
    assert "XYZZY" not in result.stdout + result.stderr
    assert "cgi: http://192.0.2.5/videostream.cgi?user=***&pwd=***&rate=0 " in result.stdout
    assert (
        "snap: http://192.0.2.6/snap.jpg?Password=***&res=720 "
        "detect_url=http://192.0.2.6/sub.jpg?passwd=***&api_key=*** "
    ) in result.stdout


_PARAMETER_NAME_LIST = [
    "user", "username", "usr", "login", "loginuse", "loginpas", "pw", "pin", "sig",
    "password", "passwd", "pass", "pwd", "secret", "token", "access_token", "auth",
    "authorization", "signature", "X-Amz-Signature", "session", "sessionid", "key",
    "apikey", "api_key", "x-api-key", "hmac_sig",
]  # fmt: skip
_PARAMETER_NAMES = st.sampled_from(_PARAMETER_NAME_LIST)


@settings(max_examples=200, deadline=None)
@given(
    name=_PARAMETER_NAMES,
    upper=st.booleans(),
    value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1),
    before=st.sampled_from(["", "rate=0&", "a=b&c=d&"]),
)
def test_credential_parameters_never_shown(name: str, upper: bool, value: str, before: str) -> None:
    marked = "PW" + value
    name = name.upper() if upper else name
    url = f"http://192.0.2.5/video.cgi?{before}{name}={quote(marked, safe='')}&rate=0"
    shown = redact_url(url)
    assert shown == f"http://192.0.2.5/video.cgi?{before}{name}=***&rate=0"
    camera = CameraConfig(id="c", url=url)
    assert display_url(camera) == shown
    # In free text (an FFmpeg error quoting the URL), the same.
    assert quote(marked, safe="") not in redact_text(f"cannot open {url}: 401 Unauthorized")


def test_a_known_secret_is_redacted_as_a_parameter_value_whatever_its_name() -> None:
    assert redact_url("http://h/v.cgi?x=e&y=f", "e") == "http://h/v.cgi?x=***&y=f"
    assert (
        redact_url("http://h/v.cgi?keyframes=1&mode=day") == "http://h/v.cgi?keyframes=1&mode=day"
    )
    # XMeye-style DVRs put the credentials in the path.
    assert redact_url(f"rtsp://192.0.2.7:554/user=admin_password={SECRET}_channel=1.sdp") == (
        "rtsp://192.0.2.7:554/user=***"
    )


def test_detect_url_is_read_and_redacted_like_url() -> None:
    camera = CameraConfig(
        id="c", url="rtsp://192.0.2.9/main", detect_url="rtsp://192.0.2.9/sub", username="u",
        password={"value": "p/w"},
    )  # fmt: skip
    assert detect_open_url(camera) == "rtsp://u:p%2Fw@192.0.2.9/sub"
    assert display_detect_url(camera) == "rtsp://***:***@192.0.2.9/sub"
    plain = CameraConfig(id="p", url="rtsp://192.0.2.9/live")
    assert detect_open_url(plain) == "rtsp://192.0.2.9/live"
    with pytest.raises(ValidationError, match="unsupported URL scheme"):
        CameraConfig(id="x", url="rtsp://192.0.2.9/main", detect_url="ftp://192.0.2.9/sub")
    with pytest.raises(ValidationError, match="only network URLs"):
        CameraConfig(id="y", url="rtsp://192.0.2.9/main", detect_url="sub.mp4", username="u")


# ------------------------------------------------------------------------------------------
# check-config


def test_check_config_summary(tmp_path: Path) -> None:
    path, environ = _example_secrets(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    # check_config reads the process environment, as the CLI does.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CREDENTIALS_DIRECTORY", environ["CREDENTIALS_DIRECTORY"])
        assert check_config(path, out=out, err=err) == 0
    text = out.getvalue()
    assert err.getvalue() == ""
    assert "node: gate-1" in text
    assert "4 enabled, 1 disabled" in text
    assert (
        "door: rtsp://***:***@192.0.2.10:554/Streaming/Channels/101 "
        "detect_url=rtsp://***:***@192.0.2.10:554/Streaming/Channels/102 detect_fps=8"
    ) in text
    assert "recording:" in text
    assert "(disabled)" in text
    assert "model: FP16-INT8 on AUTO" in text
    assert "mqtt: mqtt.example.lan:8883, TLS yes, user edge-facedet" in text
    assert "metrics: http://127.0.0.1:9108/metrics" in text
    for secret in ("door-password", "mqtt-password-value", "yard pass"):
        assert secret not in text


def test_check_config_errors_go_to_err(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check_config(BAD / "secret-url-bad-port.yaml", out=out, err=err) == 2
    assert out.getvalue() == ""
    assert "cameras[0] (id 'door').url" in err.getvalue()
    assert "XYZZY" not in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert check_config(tmp_path / "missing.yaml", out=out, err=err) == 2
    assert str(tmp_path / "missing.yaml") in err.getvalue()


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("check-config", *args, env=env)


def test_cli_check_config_accepts_demo_yaml() -> None:
    result = _run_cli(str(REPO / "config" / "demo.yaml"))
    assert result.returncode == 0, result.stderr
    assert "head-pose" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("fps-negative.yaml", "cameras[0] (id 'cam1').detect_fps"),
        ("secret-url-bad-port.yaml", "cameras[0] (id 'door').url"),
        ("secret-yaml-syntax-error.yaml", "invalid YAML"),
        ("billion-laughs.yaml", "aliases"),
        ("non-utf8.yaml", "not UTF-8"),
    ],
)
def test_cli_check_config_rejects_bad_config(name: str, fragment: str) -> None:
    result = _run_cli(str(BAD / name))
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert "XYZZY" not in result.stdout + result.stderr


def test_cli_check_config_missing_file(tmp_path: Path) -> None:
    result = _run_cli(str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_config_unreadable_password_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "mqtt: {username: u, password: {file: /nonexistent/mqtt.pass}}\n"
        "cameras: [{id: a, url: 'rtsp://h/x'}]\n",
    )
    result = _run_cli(str(path))
    assert result.returncode == 2
    assert "mqtt.password: password file /nonexistent/mqtt.pass" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------
# Properties


def _scratch(factory: pytest.TempPathFactory) -> Path:
    """One reused file for all examples (hypothesis runs many per test function)."""
    directory = factory.getbasetemp() / "config-properties"
    directory.mkdir(exist_ok=True)
    return directory / "c.yaml"


_keys = st.sampled_from(
    [
        "node_id",
        "model",
        "mqtt",
        "metrics",
        "defaults",
        "cameras",
        "id",
        "url",
        "password",
        "username",
        "detect_fps",
        "publish",
        "policy",
        "roi",
        "x_min",
        "tls",
        "file",
        "env",
        "value",
        "credential",
        "device",
        "port",
        "host",
        "topic_prefix",
        "loop",
        "bogus",
    ]
) | st.text(max_size=8)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.sampled_from(["rtsp://h/x", "AUTO", "on_change", "../x.mp4", "/dev/video0", "0"])
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(_keys, _documents, max_size=8))
def test_any_mapping_loads_or_raises_config_error(
    tmp_path_factory: pytest.TempPathFactory, document: object
) -> None:
    path = _scratch(tmp_path_factory)
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        config = load_config(path, environ=NO_ENV)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ")
    else:
        assert isinstance(config, ServiceConfig)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_load_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = _scratch(tmp_path_factory)
    path.write_bytes(data)
    # Any outcome but a ConfigError (or success) propagates and fails the test.
    with contextlib.suppress(ConfigError):
        load_config(path, environ=NO_ENV)


_camera_field = st.sampled_from(
    ["detect_fps", "url", "roi", "publish", "username", "id", "loop", "bogus", "password"]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=_camera_field, value=_documents, where=st.sampled_from(["camera", "mqtt"]))
def test_secret_never_in_message_whatever_else_is_wrong(
    tmp_path_factory: pytest.TempPathFactory, field: str, value: object, where: str
) -> None:
    camera: dict[str, object] = {
        "id": "door",
        "url": f"rtsp://admin:{SECRET}@192.0.2.1/s",
        field: value,
    }
    mqtt: dict[str, object] = {"username": "u", "password": {"value": SECRET}}
    if where == "mqtt":
        mqtt[field] = value
        camera.pop(field)
    document = {"mqtt": mqtt, "cameras": [camera]}
    path = _scratch(tmp_path_factory)
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        load_config(path, environ=NO_ENV)
    except ConfigError as exc:
        assert SECRET not in str(exc)


_userinfo_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20
)


@settings(max_examples=300, deadline=None)
@given(
    user=_userinfo_text,
    password=_userinfo_text,
    host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
    port=st.none() | st.integers(min_value=1, max_value=65535),
    path=st.from_regex(r"(/[a-z0-9]{0,8}){0,3}", fullmatch=True),
)
def test_redaction_never_shows_the_password(
    user: str, password: str, host: str, port: int | None, path: str
) -> None:
    marked = "PW" + password  # a marker the host and path alphabets cannot produce
    netloc = f"{quote(user, safe='')}:{quote(marked, safe='')}@{host}"
    if port is not None:
        netloc += f":{port}"
    url = f"rtsp://{netloc}{path}"
    camera = CameraConfig(id="c", url=url)
    for shown in (redact_url(url), display_url(camera)):
        assert quote(marked, safe="") not in shown
        assert marked not in shown
        assert shown.startswith(f"rtsp://***:***@{host}")
    via_fields = CameraConfig(
        id="c",
        url=f"rtsp://{host}{path}",
        username=user.strip() or "u",
        password=SecretSource(value=marked),
    )
    opened = urlsplit(detect_open_url(via_fields))
    assert opened.password is not None
    assert unquote(opened.password) == marked
    assert opened.hostname == host
    assert marked not in display_url(via_fields)


# ------------------------------------------------------------------------------------------
# check-config outside the unit: credentials and the unit's sandbox (issue 19)

UNIT = REPO / "systemd" / "edge-facedet.service"


def _unit_load_credential() -> str:
    """The shipped unit's LoadCredential= value, e.g. `edge-facedet:/etc/edge-facedet/...`."""
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    (value,) = [line.split("=", 1)[1] for line in lines if line.startswith("LoadCredential=")]
    return value


def _check_in_shell(
    *args: str | Path, credentials_directory: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`edge-facedet check-config ARGS` as an operator's shell runs it: no
    $CREDENTIALS_DIRECTORY unless given (the unit's value inside it)."""
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    if credentials_directory is not None:
        env["CREDENTIALS_DIRECTORY"] = str(credentials_directory)
    return subprocess.run(
        [*edge_facedet_command(), "check-config", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _credential_config(tmp_path: Path) -> tuple[Path, Path]:
    """An /etc/edge-facedet-like folder: a config using the unit's credential names, and the
    credentials folder the unit loads (`LoadCredential=edge-facedet:<etc>/credentials`)."""
    etc = tmp_path / "etc"
    credentials = etc / "credentials"
    _write(credentials / "mqtt-password", f"{SECRET}\n")
    _write(credentials / "door", f"{SECRET}-door")
    config = _write(
        etc / "config.yaml",
        "mqtt: {username: edge, password: {credential: edge-facedet_mqtt-password}}\n"
        "cameras:\n"
        "  - {id: door, url: 'rtsp://192.0.2.1/x', username: u,\n"
        "     password: {credential: edge-facedet_door}}\n",
    )
    return config, credentials


def test_cli_check_config_credentials_dir_reads_the_unit_folder(tmp_path: Path) -> None:
    # Before: the README's check-config step exited 2 on the config the README recommends,
    # since $CREDENTIALS_DIRECTORY exists only inside the unit and nothing could stand in.
    config, credentials = _credential_config(tmp_path)
    result = _check_in_shell("--credentials-dir", credentials, config)
    assert result.returncode == 0, result.stderr
    assert f"{config}: OK" in result.stdout
    assert result.stderr == ""
    assert SECRET not in result.stdout + result.stderr


def test_cli_check_config_without_credentials_names_the_units_form(tmp_path: Path) -> None:
    # Before, the hint named `LoadCredential=edge-facedet_mqtt-password:...`, a form the
    # unit does not use, and no way to run the check from a shell.
    config, _ = _credential_config(tmp_path)
    result = _check_in_shell(config)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr  # mqtt and the door camera, one line each
    assert lines[0].startswith(f"{config}: mqtt.password: credential edge-facedet_mqtt-password")
    for line in lines:
        assert f"LoadCredential={_unit_load_credential()}" in line
        assert "check-config --credentials-dir /etc/edge-facedet/credentials" in line
        assert "LoadCredential=edge-facedet_" not in line
    assert SECRET not in result.stdout + result.stderr


def test_cli_check_config_default_is_the_units_credentials_directory(tmp_path: Path) -> None:
    # Inside the unit $CREDENTIALS_DIRECTORY holds the files under their credential names.
    config, credentials = _credential_config(tmp_path)
    loaded = tmp_path / "run-credentials"
    for name in ("mqtt-password", "door"):
        _write(loaded / f"edge-facedet_{name}", (credentials / name).read_text())
        (credentials / name).unlink()  # only the unit's names can be what is read
    result = _check_in_shell(config, credentials_directory=loaded)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_cli_check_config_credential_missing_from_both_forms(tmp_path: Path) -> None:
    config, credentials = _credential_config(tmp_path)
    (credentials / "door").unlink()
    result = _check_in_shell("--credentials-dir", credentials, config)
    assert result.returncode == 2
    assert result.stderr == (
        f"{config}: cameras[0] (id 'door').password: credential edge-facedet_door: neither "
        f"{credentials / 'edge-facedet_door'} nor {credentials / 'door'} (the unit's folder "
        "form) exists\n"
    )


def test_cli_check_config_credentials_dir_must_be_a_directory(tmp_path: Path) -> None:
    config, credentials = _credential_config(tmp_path)
    result = _check_in_shell("--credentials-dir", credentials / "mqtt-password", config)
    assert result.returncode == 2
    assert result.stderr == (
        f"edge-facedet: --credentials-dir {credentials / 'mqtt-password'}: not a directory\n"
    )


def test_credential_folder_form_never_names_the_folder_or_its_parent(tmp_path: Path) -> None:
    # `edge-facedet_..` passes the name pattern; its folder form would be the parent folder.
    folder = tmp_path / "credentials"
    folder.mkdir()
    for name in ("edge-facedet_..", "edge-facedet_.", "edge-facedet_"):
        with pytest.raises(ConfigError) as info:
            SecretSource(credential=name).reveal(environ=NO_ENV, credentials_dir=folder)
        assert f"credential {folder / name}: cannot be read" in str(info.value)


def test_credential_exact_name_is_read_before_the_folder_form(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    _write(folder / "edge-facedet_x", "exact")
    _write(folder / "x", "folder form")
    assert SecretSource(credential="edge-facedet_x").reveal(credentials_dir=folder) == "exact"
    assert SecretSource(credential="x").reveal(credentials_dir=folder) == "folder form"


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("/home/op/clips/lobby.mp4", "/home"),
        ("file:///root/lobby.mp4", "/root"),
        ("/srv/../run/user/1000/a.mp4", "/run/user"),
        ("/srv/edge-facedet/lobby.mp4", None),
        ("/homestead/lobby.mp4", None),
        ("rtsp://192.0.2.1/home/x", None),
    ],
)
def test_check_config_warns_about_camera_files_the_unit_cannot_see(
    tmp_path: Path, url: str, hidden: str | None
) -> None:
    # The unit's ProtectHome=yes hides these; a clip there passed the check and failed only
    # once the service ran.
    path = _write(tmp_path / "c.yaml", f"cameras: [{{id: lobby, url: '{url}', loop: true}}]\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(path, out=out, err=err) == 0
    assert f"{path}: OK" in out.getvalue()
    if hidden is None:
        assert err.getvalue() == ""
    else:
        assert err.getvalue() == (
            f"{path}: warning: cameras[0] (id 'lobby').url: {url} is under {hidden}, which the "
            "systemd unit cannot see (ProtectHome=yes); for the service, keep camera files "
            "elsewhere, e.g. /srv/edge-facedet\n"
        )


def test_cli_check_config_warns_for_a_detect_url_under_home(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "cameras: [{id: cam, url: 'rtsp://192.0.2.1/x', detect_url: /home/op/sub.mp4}]\n",
    )
    result = _check_in_shell(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"{path}: warning: cameras[0] (id 'cam').detect_url: ")
    assert "/home/op/sub.mp4 is under /home" in result.stderr


def test_http_auth_secrets_are_checked_at_load_and_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_facedet.cli import secret_values

    config = _write(
        tmp_path / "auth.yaml",
        "metrics:\n  host: 0.0.0.0\n  auth:\n    username: ops\n"
        "    password: {file: ops.pass}\n    token: {env: EDGE_TEST_TOKEN}\n"
        "cameras:\n  - {id: door, url: rtsp://192.0.2.1/s}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    problems = str(caught.value)
    assert "metrics.auth.password" in problems and "ops.pass" in problems
    assert "metrics.auth.token" in problems and "EDGE_TEST_TOKEN" in problems
    (tmp_path / "ops.pass").write_text("a-long-basic-password\n")
    monkeypatch.setenv("EDGE_TEST_TOKEN", "a-long-bearer-token")
    loaded = load_config(config, environ={"EDGE_TEST_TOKEN": "a-long-bearer-token"})
    values = secret_values(loaded)
    assert "a-long-basic-password" in values and "a-long-bearer-token" in values
