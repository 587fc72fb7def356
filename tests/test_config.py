"""sovnetd's configuration: precedence, defaults, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovnet.core import config
from sovnet.core.address import PeerAddress
from sovnet.errors import ConfigError

HOME = Path("/home/ada")


def test_defaults() -> None:
    loaded = config.load(None, {}, HOME)
    assert loaded.state_dir == HOME / ".local/share/sovnet"
    assert loaded.socket == loaded.state_dir / "sovnetd.sock"
    assert loaded.swarm_listen == PeerAddress("0.0.0.0", 6881)
    assert loaded.control_listen == PeerAddress("0.0.0.0", 6880)
    assert loaded.peers == ()
    assert loaded.stall_timeout == 120.0


def test_metrics_listen_is_the_default_if_free_an_address_or_off() -> None:
    assert config.load(None, {}, HOME).metrics_listen is None  # 127.0.0.1:9680 if free
    toml = b'metrics_listen = "0.0.0.0:9100"\n'
    assert config.load(toml, {}, HOME).metrics_listen == PeerAddress("0.0.0.0", 9100)
    assert config.load(None, {"SOVNET_METRICS_LISTEN": "OFF"}, HOME).metrics_listen == "off"
    with pytest.raises(ConfigError, match="metrics_listen"):
        config.load(None, {}, HOME, {"metrics_listen": "nowhere"})


def test_follow_names_publishers_and_optionally_models_and_channels() -> None:
    toml = (
        b'follow = ["acme", {publisher = "beta", models = ["beta/tiny"], channels = ["stable"]}]\n'
    )
    acme, beta = config.load(toml, {}, HOME).follow
    assert acme == config.FollowRule("acme")
    assert beta == config.FollowRule("beta", ("beta/tiny",), ("stable",))
    assert beta.wants("beta/tiny", ("stable", "latest")) and not beta.wants("beta/tiny", ())
    assert not beta.wants("beta/big", ("stable",)) and acme.wants("acme/x", ())
    [gamma] = config.load(b'follow = [{publisher = "gamma", versions = 2}]', {}, HOME).follow
    assert gamma == config.FollowRule("gamma", versions=2)
    from_env = config.load(None, {"SOVNET_FOLLOW": "acme, beta"}, HOME).follow
    assert [rule.publisher for rule in from_env] == ["acme", "beta"]
    for bad in (
        b'follow = ["../x"]',
        b'follow = [{publisher = "beta", models = ["acme/tiny"]}]',
        b'follow = [{publisher = "beta", channels = ["Not A Channel"]}]',
        b'follow = [{publisher = "beta", keep = 3}]',
        b'follow = [{publisher = "beta", versions = 0}]',
        b'follow = [{publisher = "beta", versions = "two"}]',
        b'follow = [{publisher = "acme", versions = 1}, "acme"]',
    ):
        with pytest.raises(ConfigError, match="'follow'"):
            config.load(bad, {}, HOME)


def test_flags_beat_environment_beat_file() -> None:
    toml = b'stall_timeout = 30\npeers = ["192.0.2.1:6880"]\nlog_level = "debug"\n'
    env = {"SOVNET_STALL_TIMEOUT": "20", "SOVNET_PEERS": "192.0.2.2:6880, 192.0.2.3:6880"}
    loaded = config.load(toml, env, HOME, {"stall_timeout": 10, "log_level": None})
    assert loaded.stall_timeout == 10.0
    assert loaded.peers == (PeerAddress("192.0.2.2", 6880), PeerAddress("192.0.2.3", 6880))
    assert loaded.log_level == "debug"


def test_systemd_directories() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/sovnet", "RUNTIME_DIRECTORY": "/run/sovnet"}
    loaded = config.load(None, env, HOME)
    assert loaded.state_dir == Path("/var/lib/sovnet")
    assert loaded.socket == Path("/run/sovnet/api.sock")
    path, required = config.config_file({"CONFIGURATION_DIRECTORY": "/etc/sovnet"}, HOME)
    assert (path, required) == (Path("/etc/sovnet/sovnetd.toml"), False)


def test_config_file_location() -> None:
    assert config.config_file({}, HOME) == (HOME / ".config/sovnet/sovnetd.toml", False)
    assert config.config_file({"SOVNET_CONFIG": "/x.toml"}, HOME) == (Path("/x.toml"), True)
    assert config.config_file({}, HOME, "/y.toml") == (Path("/y.toml"), True)


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        (b"stall_timeout = -1\n", {}, "'stall_timeout' from sovnetd.toml"),
        (b"stall_timeout = true\n", {}, "'stall_timeout'"),
        (b'swarm_listen = "nowhere"\n', {}, "'swarm_listen'"),
        (b"peers = 3\n", {}, "'peers'"),
        (b'log_level = "loud"\n', {}, "'log_level'"),
        (b"upload_rate_limit = 1.5\n", {}, "'upload_rate_limit'"),
        (None, {"SOVNET_DOWNLOAD_RATE_LIMIT": "fast"}, "'SOVNET_DOWNLOAD_RATE_LIMIT'"),
        (None, {"SOVNET_PEERS": "a:1,b"}, "'SOVNET_PEERS' from the environment"),
    ],
)
def test_bad_values_name_the_field(toml: bytes | None, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(toml, env, HOME)
    assert named in caught.value.message
    assert caught.value.exit_code == 4


def test_unknown_setting_and_bad_toml() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'stal_timeout'"):
        config.load(b"stal_timeout = 3\n", {}, HOME)
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(b"stall_timeout = \n", {}, HOME)


def test_a_leading_tilde_is_the_home_given_not_the_environment_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", "/somewhere/else")
    env = {"SOVNET_STATE_DIR": "~/state", "SOVNET_SOCKET": "~"}
    loaded = config.load(b"peers = []\n", env, tmp_path)
    assert loaded.state_dir == tmp_path / "state"
    assert loaded.socket == tmp_path
    assert config.config_file({}, tmp_path, "~/sovnetd.toml") == (tmp_path / "sovnetd.toml", True)
    assert config.load(b'state_dir = "~user/x"\n', {}, tmp_path).state_dir == Path("~user/x")


def test_only_the_settings_asked_for_are_read_and_checked() -> None:
    """The CLI applies sovnetd's `revoked` setting: another setting that is bad (or
    unknown) in the same file is sovnetd's to refuse, not a reason to stop `run`."""
    toml = b'peers = 5\nnot_a_setting = 1\nrevoked = "allow"\n'
    assert config.load(toml, {}, HOME, only=("revoked",)).revoked == "allow"
    assert config.load(toml, {"SOVNET_PEERS": "x"}, HOME, only=("revoked",)).revoked == "allow"
    with pytest.raises(ConfigError, match="'revoked'"):
        config.load(b'revoked = "yes"\n', {}, HOME, only=("revoked",))
    with pytest.raises(ConfigError, match="'SOVNET_REVOKED'"):
        config.load(None, {"SOVNET_REVOKED": "1"}, HOME, only=("revoked",))
    with pytest.raises(ConfigError):
        config.load(toml, {}, HOME)


def test_the_mirror_example_config_loads() -> None:
    example = Path(__file__).parents[1] / "systemd" / "mirror.toml"
    loaded = config.load(example.read_bytes(), {}, HOME, source=str(example))
    assert [rule.publisher for rule in loaded.follow] == ["acme", "beta", "gamma"]
    assert loaded.metrics_listen == PeerAddress("127.0.0.1", 9680)
    assert loaded.log_format == "json"


def test_sizes_and_local_networks() -> None:
    toml = b'max_store_bytes = "2GiB"\nmin_disk_free = "1TB"\nlocal_networks = ["10.0.0.0/8"]\n'
    loaded = config.load(toml, {}, HOME)
    assert (loaded.max_store_bytes, loaded.min_disk_free) == (2 * 1024**3, 10**12)
    assert loaded.local_networks == ("10.0.0.0/8",)
    env = {"SOVNET_LOCAL_NETWORKS": "192.168.1.7/24, fd00::/8"}
    assert config.load(None, env, HOME).local_networks == ("192.168.1.0/24", "fd00::/8")
    assert config.parse_size("1.5GiB") == 3 * 2**29 and config.parse_size("0.5 kib") == 512
    for text in ("1.5", "1.2.3GiB", "1e3MB", "-1MB", "\u0663GiB"):  # half a byte; not a number
        with pytest.raises(ValueError):
            config.parse_size(text)
    for bad in (b'max_store_bytes = "2 parsecs"\n', b'local_networks = ["10.0.0.0/33"]\n'):
        with pytest.raises(ConfigError):
            config.load(bad, {}, HOME)
