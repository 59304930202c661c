"""Untrusted files never run code, escape their folder or exhaust the machine (issue 6).

- model directories: tampered, truncated or hostile model dirs are one clear error naming the
  file; nothing in them is ever unpickled or executed (a static scan of the package backs it);
- zip uploads: no path traversal, no symlinks, entry-count and unpacked-size limits that hold
  even when the zip's own headers lie;
- the web app (``psinspect serve`` in a subprocess on loopback): binds 127.0.0.1 by default,
  serves no file outside its own temp folder, enforces the upload limit, and removes the temp
  folder when stopped.
"""

from __future__ import annotations

import ast
import contextlib
import io
import ipaddress
import json
import os
import pickle
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _robust_util import error_lines, run_cli, sphere_normals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import psinspect
from psinspect.app import Limits, load_inspection_input, safe_extract_zip
from psinspect.errors import PsinspectError
from psinspect.fileio import save_npy
from psinspect.models import create_model
from psinspect.modelstore import load_model_dir, save_model_dir, weights_bytes, weights_path

SRC = Path(psinspect.__file__).parent


# --------------------------------------------------------------------------------------------
# model directories


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """A small trained-format model dir (unet-ae with real weights, no training needed)."""
    model = create_model("unet-ae", channels=[4, 8], patch=32)
    return save_model_dir(tmp_path / "model", model, threshold=0.5, image_threshold=0.7)


class _Boom:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path(self.marker).touch, ())


def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def _set_config(d: Path, **changes) -> None:
    cfg = _config(d)
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _flip_byte(d: Path) -> None:
    p = weights_path(d)
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x40
    p.write_bytes(bytes(b))


def _truncate_weights(d: Path) -> None:
    p = weights_path(d)
    p.write_bytes(p.read_bytes()[:100])


def _truncate_config(d: Path) -> None:
    p = d / "config.json"
    p.write_bytes(p.read_bytes()[:60])


def _consistent_forgery(d: Path) -> None:
    """Weights swapped for other arrays AND the checksum updated to match: still refused."""
    data = weights_bytes({"evil": np.zeros(3, np.float32)})
    (weights_path(d)).write_bytes(data)
    import hashlib

    _set_config(d, weights_sha256=hashlib.sha256(data).hexdigest())


def _nan_weights(d: Path) -> None:
    """One weight set to NaN, the checksum updated to match: refused, not scored with."""
    import hashlib

    from safetensors.numpy import load_file

    arrays = load_file(weights_path(d))
    name = sorted(arrays)[0]
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nan
    data = weights_bytes(arrays)
    (weights_path(d)).write_bytes(data)
    _set_config(d, weights_sha256=hashlib.sha256(data).hexdigest())


def _pickle_as_weights(d: Path) -> None:
    """A pickle (that would create a marker file) in place of the safetensors file, with a
    matching checksum."""
    import hashlib

    data = pickle.dumps(_Boom(str(d.parent / "PWNED")))
    (weights_path(d)).write_bytes(data)
    _set_config(d, weights_sha256=hashlib.sha256(data).hexdigest())


#: the weights file of a model folder, as error messages name it
_W = r"model-[0-9a-f]{16}\.safetensors"

TAMPERING = [
    ("flipped byte", _flip_byte, _W + r": SHA-256 mismatch"),
    ("truncated weights", _truncate_weights, _W + r": SHA-256 mismatch"),
    ("missing weights", lambda d: (weights_path(d)).unlink(),
     _W + r": missing weights file"),
    ("missing config", lambda d: (d / "config.json").unlink(), r"config\.json: missing"),
    ("truncated config", _truncate_config, r"config\.json: not readable JSON"),
    ("config not an object", lambda d: (d / "config.json").write_text("[1, 2]"),
     r"config\.json: not a psinspect model config"),
    ("binary config", lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00\x01"),
     r"config\.json: not readable JSON"),
    ("other version", lambda d: _set_config(d, psinspect_version="9.9.0"),
     r"retrain the model with this version"),
    ("NaN threshold", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"threshold": 0.5', '"threshold": NaN')),
     r"config\.json: threshold is not a finite number"),
    ("huge threshold", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"image_threshold": 0.7',
                                                 '"image_threshold": 1e999')),
     r"config\.json: image_threshold is not a finite number"),
    ("negative threshold", lambda d: _set_config(d, threshold=-1e308),
     r"config\.json: threshold is not a finite number >= 0"),
    ("string threshold", lambda d: _set_config(d, threshold="0.5"),
     r"config\.json: missing or invalid 'threshold'"),
    ("unknown model", lambda d: _set_config(d, model="os.system"),
     r"config\.json: unknown model 'os\.system'"),
    ("hostile hyperparameters", lambda d: _set_config(d, hyperparameters={"__class__": 1}),
     r"config\.json: .*unknown hyperparameter '__class__'"),
    ("hyperparameter of a wrong kind", lambda d: _set_config(d, hyperparameters={
        "channels": "abc"}), r"config\.json: .*bad hyperparameters"),
    ("weights path traversal", lambda d: _set_config(d, weights_file="../../etc/passwd"),
     r"config\.json: weights_file must be a plain file name"),
    ("absolute weights path", lambda d: _set_config(d, weights_file="/etc/passwd"),
     r"config\.json: weights_file must be a plain file name"),
    ("tile no larger than its overlaps", lambda d: _set_config(d, input={
        "tile": 128, "tile_overlap": 64}), r"config\.json: invalid input 'tile' / 'tile_overlap'"),
    ("consistent forgery", _consistent_forgery, _W + r": weights do not fit"),
    ("NaN weight", _nan_weights, _W + r": .*contains NaN or Inf"),
    ("pickle as weights", _pickle_as_weights, _W + r": not a readable safetensors"),
]


@pytest.mark.parametrize(("tamper", "pattern"), [t[1:] for t in TAMPERING],
                         ids=[t[0] for t in TAMPERING])
def test_tampered_model_dir(model_dir: Path, tmp_path: Path, monkeypatch, capsys, tamper,
                            pattern: str) -> None:
    load_model_dir(model_dir)  # fine before
    tamper(model_dir)
    with pytest.raises(PsinspectError, match=pattern):
        load_model_dir(model_dir)
    save_npy(tmp_path / "part.npy", sphere_normals(24)[0])
    out = tmp_path / "out"
    code, _, err = run_cli(["detect", tmp_path / "part.npy", "--model", model_dir, "-o", out],
                           monkeypatch, capsys)
    errs = error_lines(err)
    assert code == 2 and len(errs) == 1 and str(model_dir) in errs[0], err
    assert not out.exists()
    assert not (tmp_path / "PWNED").exists()


def test_weights_symlink_out_of_the_folder(model_dir: Path, tmp_path: Path) -> None:
    """A weights file that is a link to some other file is read only as bytes and fails the
    checksum; nothing else happens."""
    (weights_path(model_dir)).unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("not weights")
    os.symlink(secret, weights_path(model_dir))
    with pytest.raises(PsinspectError, match="SHA-256 mismatch"):
        load_model_dir(model_dir)


def test_pickles_lying_around_are_never_loaded(model_dir: Path, tmp_path: Path) -> None:
    """Files a hostile model dir might add (a torch checkpoint, a .npy object array) are
    ignored, and torch's own loader refuses them with weights_only=True."""
    import torch

    marker = tmp_path / "PWNED"
    for name in ("model.pt", "model.pth", "model.pkl", "pytorch_model.bin"):
        (model_dir / name).write_bytes(pickle.dumps(_Boom(str(marker))))
    np.save(model_dir / "normals.npy", np.array([_Boom(str(marker))], dtype=object),
            allow_pickle=True)
    bundle = load_model_dir(model_dir)
    assert bundle.config["model"] == "unet-ae"
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(model_dir / "model.pt", weights_only=True)
    assert not marker.exists()


def _dangerous_calls(tree_: ast.AST) -> list[str]:
    """Calls that can run code from data: pickle/marshal/shelve loads, torch.load without
    weights_only=True, numpy loads with allow_pickle=True, eval/exec, shell=True, os.system,
    yaml.load."""
    found = []
    for node in ast.walk(tree_):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = (f.id if isinstance(f, ast.Name) else
                f"{ast.unparse(f.value)}.{f.attr}" if isinstance(f, ast.Attribute) else "")
        kw = {k.arg: k.value for k in node.keywords}
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(name)
        elif name.split(".")[0] in ("pickle", "cPickle", "marshal", "shelve", "dill") and \
                name.split(".")[-1] in ("load", "loads", "open", "Unpickler"):
            found.append(name)
        elif name == "torch.load" and not (
                isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value):
            found.append(name)
        elif name.endswith(("np.load", "numpy.load")) and isinstance(
                kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
            found.append(f"{name}(allow_pickle=True)")
        elif name in ("os.system", "os.popen", "yaml.load", "yaml.unsafe_load"):
            found.append(name)
        elif isinstance(kw.get("shell"), ast.Constant) and kw["shell"].value:
            found.append(f"{name}(shell=True)")
    return found


def test_no_code_executing_loaders_in_the_package() -> None:
    bad = {}
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        hits = _dangerous_calls(ast.parse(path.read_text(encoding="utf-8")))
        if hits:
            bad[str(path.relative_to(SRC))] = hits
    assert bad == {}
    # the scanner itself finds what it should
    probe = ast.parse("import pickle, torch, numpy as np\npickle.loads(b'')\ntorch.load('x')\n"
                      "np.load('x', allow_pickle=True)\neval('1')\nsubprocess.run('x', "
                      "shell=True)\ntorch.load('y', weights_only=True)\n")
    assert len(_dangerous_calls(probe)) == 5


def test_tampered_checkpoint_refused_on_resume(tmp_path: Path, monkeypatch, capsys) -> None:
    """--resume reads only the (checksummed) safetensors checkpoint and its JSON."""
    from psinspect.train import _write_checkpoint

    save_npy(tmp_path / "a.npy", sphere_normals(24)[0])
    save_npy(tmp_path / "b.npy", sphere_normals(22)[0])
    mdir = tmp_path / "m"
    inputs = [tmp_path / "a.npy", tmp_path / "b.npy"]

    def attempt() -> str:
        code, _, err = run_cli(["train", *inputs, "-o", mdir, "--resume"], monkeypatch, capsys)
        assert code == 2 and len(error_lines(err)) == 1, err
        assert not (mdir / "config.json").exists()
        return err

    assert "no checkpoint to resume from" in attempt()
    _write_checkpoint(mdir, {"w": np.ones(3, np.float32)}, {"args": {}, "train_state": {}})
    (state,) = (mdir / ".checkpoint").glob("state-*.safetensors")
    state.write_bytes(state.read_bytes()[:-8])
    assert "checkpoint does not match its checksum" in attempt()
    (mdir / ".checkpoint" / "state.json").write_text("{not json")
    assert "unreadable checkpoint" in attempt()
    _write_checkpoint(mdir, {"w": np.ones(3, np.float32)}, {"no": "args"})
    assert "state.json" in attempt()
    # settings no run writes: reported as options the user gave, or trained "-49 epochs"
    settings = {"inputs": [str(p) for p in inputs], "epochs": 2, "patience": 6,
                "batch_size": 8, "seed": 0, "threshold_fpr": 0.001, "image_fpr": 0.01,
                "model": "unet-ae", "hyperparameters": {}, "init_from": None,
                "threshold": None, "solver": None}
    for args, state, said in (
            ({**settings, "batch_size": 0}, {"epoch": 0}, "damaged checkpoint (batch_size 0)"),
            (settings, {"epoch": 50}, "damaged checkpoint (epoch 50 of 2)"),
            ({**settings, "epochs": "2"}, {"epoch": 0}, "damaged checkpoint (epochs '2')"),
            ({k: v for k, v in settings.items() if k != "threshold"}, {"epoch": 0},
             "damaged checkpoint (threshold 'missing')"),
            ({**settings, "hyperparameters": [1]}, {"epoch": 0},
             "damaged checkpoint (hyperparameters [1])")):
        _write_checkpoint(mdir, {"w": np.ones(3, np.float32)},
                          {"args": args, "train_state": state})
        err = attempt()
        assert f"state.json: {said}; train again without --resume" in err, err
    # weights that do not fit the network its settings build (its channels edited): named
    from psinspect.models import create_model
    net = create_model("unet-ae")
    args = {**settings, "hyperparameters": net.hyperparameters()}
    weights = {f"net.{k}": v for k, v in net.state_arrays().items()}
    first = next(iter(net.state_arrays()))
    for prefix, arrays in (("net", {**weights, f"net.{first}": np.ones(3, np.float32)}),
                           ("best", {**weights, "best.x": np.ones(3, np.float32)})):
        _write_checkpoint(mdir, arrays, {"args": args, "train_state": {"epoch": 0}})
        err = attempt()
        assert (f"state.json: damaged checkpoint (its {prefix} weights do not fit the network "
                "its settings build: ") in err, err


# --------------------------------------------------------------------------------------------
# zip archives


def _zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]],
               compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


_NAME_PARTS = st.sampled_from(["..", ".", "", "a", "b.png", "lights.txt", "C:", "\\..\\x",
                               "/", "//", "~", "%2e%2e", "\u2024\u2024", "a\x00b", "con",
                               "..\\..", " ", "x" * 40])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_NAME_PARTS, min_size=1, max_size=5).map("/".join), min_size=1,
                max_size=4),
       st.booleans())
def test_zip_entries_never_escape(names: list[str], leading_slash: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside"
        outside.mkdir()
        (outside / "sentinel").write_text("x")
        zpath = root / "up.zip"
        entries = [(("/" if leading_slash and i == 0 else "") + n, b"data")
                   for i, n in enumerate(names)]
        try:
            zpath.write_bytes(_zip_bytes(entries))
        except (ValueError, OSError, IndexError):
            return  # zipfile itself refuses to write some names
        dest = root / "outside" / "dest"
        try:
            safe_extract_zip(zpath, dest)
        except PsinspectError as err:
            assert str(err).startswith("up.zip: ")
        # nothing outside dest changed
        got = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        assert all(g in ("outside", "outside/sentinel", "up.zip") or
                   g.startswith("outside/dest") for g in got), got
        for p in dest.rglob("*") if dest.exists() else []:
            assert not p.is_symlink()
            assert dest.resolve() in p.resolve().parents


def test_symlink_then_write_through_it(tmp_path: Path) -> None:
    """The classic two-step escape: a symlink entry, then a file 'inside' it."""
    link = zipfile.ZipInfo("cap/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = tmp_path / "two.zip"
    z.write_bytes(_zip_bytes([(link, str(tmp_path / "victim").encode()),
                              ("cap/link/evil.txt", b"x")]))
    (tmp_path / "victim").mkdir()
    with pytest.raises(PsinspectError, match="symbolic link"):
        safe_extract_zip(z, tmp_path / "dest")
    assert list((tmp_path / "victim").iterdir()) == []
    assert not any((tmp_path / "dest").rglob("*"))


def test_special_encrypted_and_duplicate_entries(tmp_path: Path) -> None:
    fifo = zipfile.ZipInfo("fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    z = tmp_path / "fifo.zip"
    z.write_bytes(_zip_bytes([(fifo, b"")]))
    with pytest.raises(PsinspectError, match="not a regular file"):
        safe_extract_zip(z, tmp_path / "d1")
    data = bytearray(_zip_bytes([("secret.txt", b"x")]))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set "encrypted" in both headers
        at = data.find(sig) + off
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | 0x1)
    z.write_bytes(bytes(data))
    with pytest.raises(PsinspectError, match="encrypted"):
        safe_extract_zip(z, tmp_path / "d2")
    z.write_bytes(_zip_bytes([("a.txt", b"1"), ("a.txt", b"2")]))
    with pytest.raises(PsinspectError, match="appears twice"):
        safe_extract_zip(z, tmp_path / "d3")


def _lying_zip(real: bytes, claimed: int) -> bytes:
    """A deflated one-entry zip whose local and central headers claim ``claimed`` bytes."""
    data = bytearray(_zip_bytes([("zeros.bin", real)], zipfile.ZIP_DEFLATED))
    # local header: uncompressed size at offset 22; central directory entry at offset 24
    lh = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, lh + 22, claimed)
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, claimed)
    return bytes(data)


def test_zip_bomb_with_lying_headers(tmp_path: Path) -> None:
    """Headers that under-declare the unpacked size do not get past the limit: extraction
    stops at the limit (or at the size mismatch) with a clear error, and never writes more
    than the limit."""
    z = tmp_path / "bomb.zip"
    z.write_bytes(_lying_zip(b"\0" * 8_000_000, claimed=1000))
    assert z.stat().st_size < 50_000
    dest = tmp_path / "dest"
    with pytest.raises(PsinspectError, match=r"^bomb\.zip: "):
        safe_extract_zip(z, dest, Limits(max_unpacked_bytes=1 << 20))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1 << 20


def test_zip_bomb_many_small_entries(tmp_path: Path) -> None:
    z = tmp_path / "wide.zip"
    z.write_bytes(_zip_bytes([(f"d/{i}.png", b"\0" * 200_000) for i in range(20)],
                             zipfile.ZIP_DEFLATED))
    with pytest.raises(PsinspectError, match=r"unpacks to 4 MB, more than the limit of 2 MB"):
        safe_extract_zip(z, tmp_path / "dest", Limits(max_unpacked_bytes=2 << 20))
    assert not any((tmp_path / "dest").rglob("*.png"))


def test_app_upload_temp_files_removed(tmp_path: Path) -> None:
    """Through the app's loader: refused uploads leave its work folder empty."""
    work = tmp_path / "work"
    work.mkdir()
    bad = tmp_path / "evil.zip"
    bad.write_bytes(_zip_bytes([("cap/lights.txt", b"0 0 1\n"), ("../../evil.txt", b"x")]))
    with pytest.raises(PsinspectError, match="leaves the extraction folder"):
        load_inspection_input(bad, work)
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_lying_zip(b"\0" * 3_000_000, claimed=10))
    with pytest.raises(PsinspectError, match=r"^bomb\.zip: "):
        load_inspection_input(bomb, work, Limits(max_unpacked_bytes=1 << 20))
    assert list(work.iterdir()) == []


# --------------------------------------------------------------------------------------------
# the web app, as a real server on loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """``psinspect serve`` with a small model, its own TMPDIR (to watch its temp folder),
    upload limit 1 MB. Yields (base url, tmpdir, model dir, process)."""
    root = tmp_path_factory.mktemp("serve")
    model = save_model_dir(root / "model", create_model("geometric"), threshold=2.0,
                           image_threshold=3.0)
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "*"}
    log_path = root / "server.log"
    for _attempt in range(3):  # a port found free can be taken before the server binds it
        port = _free_port()
        log = open(log_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-c", "from psinspect.cli import main; main()", "serve",
             "--no-default-model", "--model-dir", str(model), "--port", str(port),
             "--max-upload-mb", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        # ready: this server said it serves there (not another process on the port) and
        # answers
        while time.monotonic() < deadline and proc.poll() is None:
            if f"psinspect app on {url}" in log_path.read_text(errors="replace"):
                try:
                    if _get(url + "/", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
            time.sleep(0.3)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        log.close()
        text = log_path.read_text(errors="replace")
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"server did not start: {text}")
        if "cannot serve there" not in text:
            pytest.fail(f"server exited: {text}")
    else:
        pytest.fail(f"no free port in 3 tries: {log_path.read_text(errors='replace')}")
    yield url, tmpdir, model, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def _listening_addresses(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the sockets listening on ``port`` (Linux /proc/net/tcp{,6})."""
    found: list = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            cols = ln.split()
            ip_hex, port_hex = cols[1].split(":")
            if cols[3] != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = b"".join(bytes.fromhex(ip_hex[i:i + 8])[::-1] for i in range(0, len(ip_hex), 8))
            found.append(ipaddress.ip_address(raw))
    return found


def _own_addresses() -> set[str]:
    """This machine's non-loopback IPv4 addresses (the UDP 'connect' sends nothing)."""
    addrs = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        addrs.add(s.getsockname()[0])
    with contextlib.suppress(OSError):
        addrs |= {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None,
                                                      socket.AF_INET)}
    return {a for a in addrs if not ipaddress.ip_address(a).is_loopback}


def test_server_binds_loopback_only(server) -> None:
    url, *_ = server
    port = int(url.rsplit(":", 1)[1])
    if Path("/proc/net/tcp").is_file():
        listening = _listening_addresses(port)
        assert listening, "no listening socket found for the server's port"
        for a in listening:
            assert a.is_loopback or getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback
    outside = _own_addresses()
    if not outside and not Path("/proc/net/tcp").is_file():
        pytest.skip("no way to look at the listening socket or reach it from outside")
    for a in outside:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect((a, port))


def test_server_serves_nothing_outside_its_temp_folder(server) -> None:
    url, tmpdir, model, _ = server
    secret = model / "config.json"
    targets = [str(secret), "/etc/passwd", "/etc/hostname", str(Path(psinspect.__file__)),
               "../" * 12 + "etc/passwd", str(tmpdir / ".." / "model" / "config.json")]
    prefixes = ["/gradio_api/file=", "/file=", "/gradio_api/file/", "/static/", "/assets/",
                "/gradio_api/static/"]
    leaked = []
    for t in targets:
        for pre in prefixes:
            for enc in (t, urllib.parse.quote(t), urllib.parse.quote(t, safe="")):
                try:
                    code, body = _get(url + pre + enc, timeout=5)
                except OSError:
                    continue
                if code == 200 and (b"weights_sha256" in body or b"root:" in body
                                    or b"psinspect" in body[:2000] and b"<html" not in body):
                    leaked.append(pre + enc)
    assert leaked == []


def _upload(url: str, name: str, data: bytes) -> tuple[int, bytes]:
    boundary = "psinspectboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type":
                                          f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_server_upload_limit_and_upload_location(server) -> None:
    url, tmpdir, _, _ = server
    code, body = _upload(url, "big.npy", b"\0" * (2 << 20))
    assert code >= 400, body[:200]
    buf = io.BytesIO()
    np.save(buf, sphere_normals(24)[0])
    code, body = _upload(url, "../../../escape.npy", buf.getvalue())
    assert code == 200, body[:300]
    (path,) = json.loads(body)
    # the upload lands inside the server's own temp folder, whatever its name says
    serve_dirs = list(tmpdir.glob("psinspect-serve-*"))
    assert len(serve_dirs) == 1
    assert serve_dirs[0].resolve() in Path(path).resolve().parents
    for p in tmpdir.parent.rglob("escape.npy"):
        assert serve_dirs[0].resolve() in p.resolve().parents


def test_server_removes_its_temp_folder_when_stopped(server) -> None:
    """Runs last in this module: stops the server (SIGINT, as Ctrl-C; then SIGTERM, as a
    service manager would) and checks the temp folder is gone."""
    url, tmpdir, _, proc = server
    assert list(tmpdir.glob("psinspect-serve-*"))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("server did not stop on SIGTERM")
    left = list(tmpdir.iterdir())
    assert left == [], left
